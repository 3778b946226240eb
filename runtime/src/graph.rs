//! The shape of a job: tasks, link types, the topology that evaluates
//! links per epoch, and typed edges.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::message::Message;

/// A task's id: tasks are numbered `0..n`.
pub type TaskId = u64;

/// An epoch: the job's global iteration counter.
pub type Epoch = u64;

/// A named relation between tasks (parent, children, peers, ...),
/// evaluated by the [`Topology`] for each task at each epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkType {
    /// Its number: the index in [`Topology::links`].
    pub id: u32,
    /// Its name, for people.
    pub name: &'static str,
    /// The link type that points back (children for parent), if the
    /// topology declares one; a symmetric link (peers) is its own inverse.
    /// The runtime checks every epoch that inverse links agree.
    pub inverse: Option<u32>,
}

impl LinkType {
    /// A link type with no inverse.
    pub const fn new(id: u32, name: &'static str) -> Self {
        LinkType { id, name, inverse: None }
    }

    /// A link type whose inverse is link type `inverse`.
    pub const fn with_inverse(id: u32, name: &'static str, inverse: u32) -> Self {
        LinkType { id, name, inverse: Some(inverse) }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Who each task's neighbours are, per link type and per epoch. It must be
/// a pure function of its arguments: every node evaluates it on its own.
pub trait Topology: Send + Sync + 'static {
    /// The link types, with `links()[i].id == i`.
    fn links(&self) -> &[LinkType];
    /// The neighbours of `task` over link type `link` at `epoch`.
    fn neighbours(&self, link: u32, task: TaskId, epoch: Epoch) -> Vec<TaskId>;
}

/// A typed pull channel: over it a task fetches message type `M` from a
/// neighbour, and serves `M` to the neighbours that fetch it.
pub struct Edge<M> {
    /// Its number, unique in the graph.
    pub id: u32,
    /// Its name, for people.
    pub name: &'static str,
    _m: PhantomData<fn() -> M>,
}

impl<M> Edge<M> {
    /// An edge with this id and name.
    pub const fn new(id: u32, name: &'static str) -> Self {
        Edge { id, name, _m: PhantomData }
    }
}

impl<M> Clone for Edge<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Edge<M> {}

impl<M> fmt::Debug for Edge<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Edge({} #{}: {})", self.name, self.id, std::any::type_name::<M>())
    }
}

impl<M: Message> Edge<M> {
    /// Decodes `bytes` (a frame this edge carried) as `M`.
    pub fn decode(&self, bytes: &[u8], limits: &crate::message::Limits) -> crate::Result<M> {
        M::decode_with(bytes, limits)
    }
}

/// A topology that does not hold together at some epoch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent topology at epoch {epoch}: task {task} lists task {neighbour} over `{link}`, but task {neighbour} does not list task {task} over `{inverse}`")]
pub struct TopologyError {
    /// The epoch.
    pub epoch: Epoch,
    /// The task whose links were checked.
    pub task: TaskId,
    /// Its neighbour that does not agree.
    pub neighbour: TaskId,
    /// The link of `task`.
    pub link: &'static str,
    /// The inverse link that should list `task`.
    pub inverse: &'static str,
}

/// A neighbour outside `0..tasks`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("topology names task {neighbour} as a `{link}` neighbour of task {task} at epoch {epoch}, but the job has tasks 0..{tasks}")]
pub struct UnknownNeighbour {
    /// The epoch.
    pub epoch: Epoch,
    /// The task whose links were evaluated.
    pub task: TaskId,
    /// The out-of-range neighbour.
    pub neighbour: TaskId,
    /// The link.
    pub link: &'static str,
    /// How many tasks the job has.
    pub tasks: u64,
}

/// Checks the links of `task` at `epoch`: every neighbour exists, and for
/// a link with an inverse, every neighbour lists `task` back. (Each task
/// checks its own side; together they check every pair.)
pub fn check_links(topology: &dyn Topology, tasks: u64, task: TaskId, epoch: Epoch) -> Result<(), String> {
    let links = topology.links();
    for link in links {
        for n in topology.neighbours(link.id, task, epoch) {
            if n >= tasks {
                return Err(UnknownNeighbour { epoch, task, neighbour: n, link: link.name, tasks }.to_string());
            }
            let Some(inv) = link.inverse else { continue };
            let Some(inverse) = links.get(inv as usize) else {
                return Err(format!("link `{}` names inverse link {inv}, which does not exist", link.name));
            };
            if !topology.neighbours(inv, n, epoch).contains(&task) {
                return Err(TopologyError { epoch, task, neighbour: n, link: link.name, inverse: inverse.name }
                    .to_string());
            }
        }
    }
    Ok(())
}

/// A topology shared between threads.
pub type SharedTopology = Arc<dyn Topology>;

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        bad: bool,
    }

    const LINKS: [LinkType; 2] = [LinkType::with_inverse(0, "parent", 1), LinkType::with_inverse(1, "children", 0)];

    impl Topology for Tree {
        fn links(&self) -> &[LinkType] {
            &LINKS
        }
        fn neighbours(&self, link: u32, task: TaskId, _epoch: Epoch) -> Vec<TaskId> {
            match link {
                0 if task > 0 => vec![(task - 1) / 2],
                0 => vec![],
                _ => {
                    let mut c: Vec<TaskId> = [2 * task + 1, 2 * task + 2].into_iter().filter(|&c| c < 7).collect();
                    if self.bad && task == 1 {
                        c.pop();
                    }
                    c
                }
            }
        }
    }

    #[test]
    fn a_consistent_tree_passes() {
        for t in 0..7 {
            check_links(&Tree { bad: false }, 7, t, 0).unwrap();
        }
    }

    #[test]
    fn the_first_bad_pair_is_named() {
        let errs: Vec<String> = (0..7).filter_map(|t| check_links(&Tree { bad: true }, 7, t, 3).err()).collect();
        assert_eq!(
            errs,
            vec!["inconsistent topology at epoch 3: task 4 lists task 1 over `parent`, but task 1 does not list task 4 over `children`"]
        );
    }

    #[test]
    fn out_of_range_neighbours_are_named() {
        let err = check_links(&Tree { bad: false }, 3, 1, 0).unwrap_err();
        assert!(err.contains("task 3") && err.contains("tasks 0..3"), "{err}");
    }
}
