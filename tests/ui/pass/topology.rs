//! Every form `#[topology]` takes compiles, with docs required, and the
//! generated consts and impl work.
#![deny(missing_docs)]

use taskgraph::prelude::*;

/// A binary tree, the same at every epoch.
#[topology(parent <-> children)]
#[derive(Clone, Debug)]
pub struct Tree {
    /// How many tasks.
    pub tasks: u64,
}

impl TreeLinks for Tree {
    fn parent(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        if task == 0 {
            vec![]
        } else {
            vec![(task - 1) / 2]
        }
    }
    fn children(&self, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
        [2 * task + 1, 2 * task + 2].into_iter().filter(|&c| c < self.tasks).collect()
    }
}

/// Every form at once: a symmetric link, a link with no inverse, a pair, a
/// trailing comma; a unit struct; crate visibility.
#[topology(peers <-> peers, log, up_2 <-> down_2,)]
pub(crate) struct Mixed;

impl MixedLinks for Mixed {
    fn peers(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![task ^ 1]
    }
    fn log(&self, _: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![]
    }
    fn up_2(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![task / 2]
    }
    fn down_2(&self, task: TaskId, _: Epoch) -> Vec<TaskId> {
        vec![2 * task, 2 * task + 1]
    }
}

mod private {
    use taskgraph::topology;

    // A private struct in a module, through the re-export at the crate's
    // root; its trait is private too.
    #[topology(next <-> prev)]
    struct Ring(u64);

    impl RingLinks for Ring {
        fn next(&self, task: taskgraph::TaskId, _: taskgraph::Epoch) -> Vec<taskgraph::TaskId> {
            vec![(task + 1) % self.0]
        }
        fn prev(&self, task: taskgraph::TaskId, _: taskgraph::Epoch) -> Vec<taskgraph::TaskId> {
            vec![(task + self.0 - 1) % self.0]
        }
    }

    pub fn check() {
        use taskgraph::Topology;
        let ring = Ring(3);
        assert_eq!(ring.neighbours(Ring::PREV.id, 0, 0), vec![2]);
        assert_eq!(ring.links(), &Ring::LINKS);
    }
}

const fn inverse_of(link: LinkType) -> Option<u32> {
    link.inverse
}

// The consts are consts.
const _: () = assert!(Tree::LINKS.len() == 2 && Mixed::LINKS.len() == 4);
const _: Option<u32> = inverse_of(Mixed::PEERS);

fn main() {
    let tree = Tree { tasks: 7 };
    assert_eq!(tree.links(), &[Tree::PARENT, Tree::CHILDREN]);
    assert_eq!(Tree::PARENT, LinkType::with_inverse(0, "parent", 1));
    assert_eq!(tree.neighbours(Tree::CHILDREN.id, 1, 0), vec![3, 4]);
    assert_eq!(tree.neighbours(Tree::PARENT.id, 4, 0), vec![1]);
    assert_eq!(tree.neighbours(9, 4, 0), Vec::<TaskId>::new());
    // A `Topology`, usable where the runtime wants one.
    let shared: taskgraph::graph::SharedTopology = std::sync::Arc::new(tree);
    for t in 0..7 {
        taskgraph::graph::check_links(&*shared, 7, t, 0).unwrap();
    }
    assert_eq!(
        Mixed::LINKS,
        [
            LinkType::with_inverse(0, "peers", 0),
            LinkType::new(1, "log"),
            LinkType::with_inverse(2, "up_2", 3),
            LinkType::with_inverse(3, "down_2", 2),
        ]
    );
    assert_eq!(Mixed.neighbours(Mixed::DOWN_2.id, 3, 0), vec![6, 7]);
    private::check();
}
