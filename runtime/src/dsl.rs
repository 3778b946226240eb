//! The graph DSL's run-time side: what `taskgraph!`, `#[task]` and
//! `#[topology]` generate code against.
//!
//! A graph declared with `taskgraph!` is a [`Graph`]: a static
//! [`GraphSpec`] (its roles with their task-id ranges, its typed edges and
//! its flags, each with the link it runs over) and a topology type. From
//! the spec the runtime
//!
//! * finds a task's role ([`GraphSpec::role_of`]) and checks that every
//!   task of a job has one ([`GraphSpec::check_tasks`]);
//! * checks every fetch and flag a task makes at run time against the
//!   declared edges (the neighbour over the link must have a role that
//!   serves the edge), failing the job with a clear message otherwise;
//! * draws the graph at an epoch ([`GraphSpec::picture`], as Mermaid or
//!   DOT).
//!
//! A role's handlers see a typed context (`WorkerCx` for role `Worker`)
//! with the operations every role has ([`RoleContext`]; it also
//! dereferences to [`TaskCx`], which has them too); the
//! fetch, reply and flag methods exist only on the contexts of the roles
//! whose edges need them. Per edge `e`, `taskgraph!` also declares, beside
//! the graph, a trait `FetchesE` (the fetch methods) and `ServesE` (the
//! reply methods), both extending [`RoleContext`], which the contexts of
//! the roles that fetch or serve `e` implement: code shared by those roles
//! takes `cx: &mut impl FetchesE`.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use crate::graph::{Edge, Epoch, LinkType, TaskId, Topology};
use crate::message::{Encoded, Message};
use crate::task::{Context, Received, ServeRequest, Task};

/// A role's number: its position in the graph's declaration.
pub type RoleId = u32;

/// A topology whose link types are known at compile time, as
/// `#[topology]` declares them; what `taskgraph!`'s `topology = T` needs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a topology with declared links",
    label = "not declared with #[topology(...)]",
    note = "declare it with `#[topology(parent <-> children)]` (or implement `taskgraph::dsl::LinkSet` by hand)"
)]
pub trait LinkSet: Topology {
    /// Its link types, `LINKS[i].id == i`.
    const LINKS: &'static [LinkType];
    /// What to say when a graph names a link it does not have: the list of
    /// its links.
    const UNKNOWN_LINK: &'static str;
}

/// A task role: which task ids take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    /// Its name.
    pub name: &'static str,
    /// Its first task id.
    pub first: TaskId,
    /// One past its last task id; `None` for every task from `first` on.
    pub end: Option<TaskId>,
    /// Whether its tasks keep replicated state (`replicated(..)`): only
    /// they get hot backups in a job with `replicas > 1`.
    pub replicated: bool,
}

/// A typed edge: the `fetchers` fetch `message` over `link` from
/// neighbours whose role is one of the `sources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Its name (its id is its position in [`GraphSpec::edges`]).
    pub name: &'static str,
    /// The message type's name.
    pub message: &'static str,
    /// The link, seen from the fetchers.
    pub link: u32,
    /// The roles that fetch.
    pub fetchers: &'static [RoleId],
    /// The roles that serve.
    pub sources: &'static [RoleId],
}

/// A flag: the `senders` flag their neighbours over `link`, whose roles
/// are among the `receivers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagSpec {
    /// Its name (its id is its position in [`GraphSpec::flags`]).
    pub name: &'static str,
    /// The link, seen from the senders.
    pub link: u32,
    /// The roles that send it.
    pub senders: &'static [RoleId],
    /// The roles that receive it.
    pub receivers: &'static [RoleId],
}

/// A graph as `taskgraph!` declared it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphSpec {
    /// The graph's name.
    pub name: &'static str,
    /// The default name of its jobs.
    pub job: &'static str,
    /// Its roles, in task-id order.
    pub roles: &'static [RoleSpec],
    /// Its edges.
    pub edges: &'static [EdgeSpec],
    /// Its flags.
    pub flags: &'static [FlagSpec],
    /// The links of its topology.
    pub links: &'static [LinkType],
}

impl GraphSpec {
    /// The role of `task`, if some role has it.
    pub fn role_of(&self, task: TaskId) -> Option<RoleId> {
        self.roles
            .iter()
            .position(|r| task >= r.first && r.end.is_none_or(|end| task < end))
            .map(|i| i as RoleId)
    }

    /// A role's name.
    pub fn role_name(&self, role: RoleId) -> &'static str {
        self.roles.get(role as usize).map_or("?", |r| r.name)
    }

    fn link_name(&self, link: u32) -> &'static str {
        self.links.get(link as usize).map_or("?", |l| l.name)
    }

    /// Checks that every task of a job of `tasks` tasks has a role, and
    /// that no role names a task the job lacks (`role Worker = 1..=8;` in
    /// a job of 4 tasks).
    pub fn check_tasks(&self, tasks: u64) -> Result<(), String> {
        let covered = self.roles.iter().filter_map(|r| r.end).max().unwrap_or(0);
        if let Some(last) = (0..tasks).rev().find(|&t| self.role_of(t).is_none()) {
            return Err(format!(
                "graph `{}` gives roles to tasks 0..{covered}, but the job has {tasks} tasks (task {last} has no role)",
                self.name
            ));
        }
        let beyond = self.roles.iter().find_map(|r| r.end.filter(|&end| end > tasks).map(|end| (r, end)));
        if let Some((role, end)) = beyond {
            let ids = |first: u64, end: u64| match end - first {
                1 => format!("task {first}"),
                _ => format!("tasks {first}..{end}"),
            };
            let missing = ids(role.first.max(tasks), end);
            return Err(format!(
                "graph `{}` gives role `{}` {}, but the job has {tasks} tasks (0..{tasks}): {missing} {} not exist; \
                 give the job {covered} tasks, or change the role's range",
                self.name,
                role.name,
                ids(role.first, end),
                if missing.starts_with("tasks") { "do" } else { "does" },
            ));
        }
        Ok(())
    }

    /// The graph at `epoch`, for a job of `tasks` tasks linked by
    /// `topology`: every task with its role, and an arrow for every fetch
    /// (from the task that serves to the task that fetches) and every flag.
    pub fn picture(&self, topology: &dyn Topology, tasks: u64, epoch: Epoch) -> GraphPicture {
        let mut picture = GraphPicture { graph: self.name, epoch, tasks: Vec::new(), arrows: Vec::new() };
        for t in 0..tasks {
            let role = self.role_of(t);
            picture.tasks.push((t, role.map_or("(no role)", |r| self.role_name(r))));
            let Some(role) = role else { continue };
            for e in self.edges.iter().filter(|e| e.fetchers.contains(&role)) {
                for n in topology.neighbours(e.link, t, epoch) {
                    if self.role_of(n).is_some_and(|r| e.sources.contains(&r)) {
                        picture.arrows.push(Arrow { from: n, to: t, label: e.name, flag: false });
                    }
                }
            }
            for f in self.flags.iter().filter(|f| f.senders.contains(&role)) {
                for n in topology.neighbours(f.link, t, epoch) {
                    if self.role_of(n).is_some_and(|r| f.receivers.contains(&r)) {
                        picture.arrows.push(Arrow { from: t, to: n, label: f.name, flag: true });
                    }
                }
            }
        }
        picture
    }
}

/// A graph declared with `taskgraph!`.
pub trait Graph: 'static {
    /// What it declares.
    const SPEC: &'static GraphSpec;
    /// Its topology.
    type Topology: LinkSet;
}

/// One arrow of a [`GraphPicture`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrow {
    /// Where the data goes from: the serving task (or the flagging one).
    pub from: TaskId,
    /// Where it goes: the fetching task (or the flagged one).
    pub to: TaskId,
    /// The edge's (or flag's) name.
    pub label: &'static str,
    /// Whether it is a flag.
    pub flag: bool,
}

/// A graph's tasks and arrows at one epoch; render it with
/// [`to_mermaid`](GraphPicture::to_mermaid) or [`to_dot`](GraphPicture::to_dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphPicture {
    /// The graph's name.
    pub graph: &'static str,
    /// The epoch drawn.
    pub epoch: Epoch,
    /// Every task and its role.
    pub tasks: Vec<(TaskId, &'static str)>,
    /// Fetch arrows (server to fetcher) then flag arrows, per task.
    pub arrows: Vec<Arrow>,
}

impl GraphPicture {
    /// A Mermaid flowchart: fetches as solid arrows (from the task that
    /// serves to the task that fetches), flags as dotted ones.
    pub fn to_mermaid(&self) -> String {
        let mut out = format!("%% {} at epoch {}\nflowchart TD\n", self.graph, self.epoch);
        for (t, role) in &self.tasks {
            out.push_str(&format!("    t{t}[\"{t}: {role}\"]\n"));
        }
        for a in &self.arrows {
            let arrow = if a.flag { "-.->" } else { "-->" };
            out.push_str(&format!("    t{} {arrow}|{}| t{}\n", a.from, a.label, a.to));
        }
        out
    }

    /// A Graphviz digraph: fetches as solid edges (from the task that
    /// serves to the task that fetches), flags as dashed ones.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n    label=\"{} at epoch {}\";\n    node [shape=box];\n",
            self.graph, self.graph, self.epoch
        );
        for (t, role) in &self.tasks {
            out.push_str(&format!("    t{t} [label=\"{t}: {role}\"];\n"));
        }
        for a in &self.arrows {
            let style = if a.flag { ", style=dashed" } else { "" };
            out.push_str(&format!("    t{} -> t{} [label=\"{}\"{style}];\n", a.from, a.to, a.label));
        }
        out.push_str("}\n");
        out
    }
}

/// A fetched message: the decoded value (it dereferences to it) and the
/// frame it came in, to forward to others without encoding it again.
pub struct Fetched<M> {
    message: M,
    frame: Encoded<M>,
}

impl<M> Fetched<M> {
    /// The message.
    pub fn into_inner(self) -> M {
        self.message
    }
    /// The frame it came in (shared, not copied): reply with it to forward
    /// the message as it is.
    pub fn encoded(&self) -> Encoded<M> {
        self.frame.clone()
    }
}

impl<M> Deref for Fetched<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.message
    }
}

impl<M: fmt::Debug> fmt::Debug for Fetched<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message.fmt(f)
    }
}

/// The answer of a serve handler: the message now, or later (with the
/// context's `reply_<edge>` method, in a later handler of the same epoch).
#[must_use = "a Serve is the answer to a neighbour's fetch: return it"]
pub struct Serve<M>(Option<Encoded<M>>);

impl<M: Message> Serve<M> {
    /// Replies with `message` now.
    pub fn now(message: &M) -> Self {
        Serve(Some(Encoded::new(message)))
    }
}

impl<M> Serve<M> {
    /// Replies now with a message encoded beforehand (one encoding for
    /// many receivers, or a fetched message forwarded as it came).
    pub fn encoded(message: &Encoded<M>) -> Self {
        Serve(Some(message.clone()))
    }
    /// Replies later, with the context's `reply_<edge>` method.
    pub fn later() -> Self {
        Serve(None)
    }
    /// Whether this replies now.
    pub fn is_now(&self) -> bool {
        self.0.is_some()
    }
}

impl<M> fmt::Debug for Serve<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(e) => write!(f, "Serve::now({e:?})"),
            None => f.write_str("Serve::later()"),
        }
    }
}

/// What every role's context can do, whatever its role: the typed
/// contexts (`WorkerCx`, ...) implement it, as does [`TaskCx`].
/// `taskgraph!` writes the impls and brings the trait into scope in the
/// module that declares the graph (it is also in the prelude).
///
/// The methods take the context itself, not a dereference of it, so an
/// argument may read the context that the call changes:
/// `cx.fail_job(format!("stuck at epoch {}", cx.epoch()))` compiles, as
/// with any `&mut self` method. Code shared by several roles takes
/// `cx: &mut impl RoleContext`, or one of the graph's per-edge traits,
/// which extend it. Implemented by generated code only: methods may be
/// added to it.
pub trait RoleContext {
    /// This task's id.
    fn task(&self) -> TaskId;
    /// The current epoch.
    fn epoch(&self) -> Epoch;
    /// How many tasks the job has.
    fn tasks(&self) -> u64;
    /// This task's role.
    fn role_name(&self) -> &'static str;
    /// The role of another task.
    fn role_of(&self, task: TaskId) -> Option<&'static str>;
    /// This task's neighbours over `link` at the current epoch.
    fn neighbours(&self, link: LinkType) -> Vec<TaskId>;
    /// Records a named result of the job (see [`Context::record`]).
    fn record(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>);
    /// Moves the job to the next epoch (if it still is at this one).
    fn advance_epoch(&mut self);
    /// Ends the job: every task gets `exit`, and the job succeeds.
    fn end_job(&mut self);
    /// Ends the job as failed, with a reason.
    fn fail_job(&mut self, reason: impl Into<String>);
}

impl RoleContext for TaskCx<'_> {
    fn task(&self) -> TaskId {
        TaskCx::task(self)
    }
    fn epoch(&self) -> Epoch {
        TaskCx::epoch(self)
    }
    fn tasks(&self) -> u64 {
        TaskCx::tasks(self)
    }
    fn role_name(&self) -> &'static str {
        TaskCx::role_name(self)
    }
    fn role_of(&self, task: TaskId) -> Option<&'static str> {
        TaskCx::role_of(self, task)
    }
    fn neighbours(&self, link: LinkType) -> Vec<TaskId> {
        TaskCx::neighbours(self, link)
    }
    fn record(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        TaskCx::record(self, name, value)
    }
    fn advance_epoch(&mut self) {
        TaskCx::advance_epoch(self)
    }
    fn end_job(&mut self) {
        TaskCx::end_job(self)
    }
    fn fail_job(&mut self, reason: impl Into<String>) {
        TaskCx::fail_job(self, reason)
    }
}

/// What every role's context can do, as the typed contexts (`WorkerCx`,
/// ...) hold it: they dereference to it (and implement [`RoleContext`],
/// whose methods are these), and add the fetch, reply and flag methods of
/// their role's edges.
pub struct TaskCx<'a> {
    cx: Context<'a>,
    spec: &'static GraphSpec,
    role: RoleId,
}

impl fmt::Debug for TaskCx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskCx")
            .field("graph", &self.spec.name)
            .field("task", &self.cx.task)
            .field("role", &self.role_name())
            .field("epoch", &self.cx.epoch)
            .finish()
    }
}

impl<'a> TaskCx<'a> {
    fn new(cx: &'a mut Context<'_>, spec: &'static GraphSpec, role: RoleId) -> Self {
        TaskCx { cx: cx.reborrow(), spec, role }
    }

    /// This task's id.
    pub fn task(&self) -> TaskId {
        self.cx.task
    }
    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.cx.epoch
    }
    /// How many tasks the job has.
    pub fn tasks(&self) -> u64 {
        self.cx.tasks
    }
    /// This task's role.
    pub fn role_name(&self) -> &'static str {
        self.spec.role_name(self.role)
    }
    /// The role of another task.
    pub fn role_of(&self, task: TaskId) -> Option<&'static str> {
        self.spec.role_of(task).map(|r| self.spec.role_name(r))
    }
    /// This task's neighbours over `link` at the current epoch.
    pub fn neighbours(&self, link: LinkType) -> Vec<TaskId> {
        self.cx.neighbours(link)
    }
    /// Records a named result of the job (see [`Context::record`]).
    pub fn record(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.cx.record(name, value);
    }
    /// Moves the job to the next epoch (if it still is at this one).
    pub fn advance_epoch(&mut self) {
        self.cx.advance_epoch();
    }
    /// Ends the job: every task gets `exit`, and the job succeeds.
    pub fn end_job(&mut self) {
        self.cx.end_job();
    }
    /// Ends the job as failed, with a reason.
    pub fn fail_job(&mut self, reason: impl Into<String>) {
        self.cx.fail_job(reason);
    }

    fn who(&self) -> String {
        format!("task {} ({})", self.cx.task, self.role_name())
    }

    fn describe(&self, task: TaskId) -> String {
        match self.role_of(task) {
            Some(r) => format!("task {task}, a `{r}`"),
            None => format!("task {task}, which has no role"),
        }
    }

    fn fetch_all<M>(&mut self, edge: Edge<M>) -> usize {
        let Some(spec) = self.spec.edges.get(edge.id as usize) else { return 0 };
        let Some(&link) = self.spec.links.get(spec.link as usize) else { return 0 };
        let neighbours = self.neighbours(link);
        for &n in &neighbours {
            if !self.check_source(spec, n) {
                return 0;
            }
        }
        for &n in &neighbours {
            self.cx.actions.push(crate::task::Action::Fetch { edge: edge.id, to: n });
        }
        neighbours.len()
    }

    fn fetch_from<M>(&mut self, edge: Edge<M>, from: TaskId) -> bool {
        let Some(spec) = self.spec.edges.get(edge.id as usize) else { return false };
        let Some(&link) = self.spec.links.get(spec.link as usize) else { return false };
        let neighbours = self.neighbours(link);
        if !neighbours.contains(&from) {
            let why = format!(
                "{} fetched `{}` from task {from}, which is not one of its `{}` neighbours at epoch {} ({neighbours:?})",
                self.who(),
                spec.name,
                link.name,
                self.cx.epoch
            );
            self.cx.fail_job(why);
            return false;
        }
        if !self.check_source(spec, from) {
            return false;
        }
        self.cx.actions.push(crate::task::Action::Fetch { edge: edge.id, to: from });
        true
    }

    fn check_source(&mut self, spec: &EdgeSpec, n: TaskId) -> bool {
        if self.spec.role_of(n).is_some_and(|r| spec.sources.contains(&r)) {
            return true;
        }
        let why = format!(
            "{} fetches `{}` over `{}` from {}, but graph `{}` declares only {} as serving it: declare the edge for that role or change the topology",
            self.who(),
            spec.name,
            self.spec.link_name(spec.link),
            self.describe(n),
            self.spec.name,
            self.role_list(spec.sources),
        );
        self.cx.fail_job(why);
        false
    }

    fn role_list(&self, roles: &[RoleId]) -> String {
        let names: Vec<String> = roles.iter().map(|&r| format!("`{}`", self.spec.role_name(r))).collect();
        names.join(" | ")
    }

    fn reply<M>(&mut self, edge: Edge<M>, to: TaskId, message: &Encoded<M>) {
        let request = ServeRequest { from: to, edge: edge.id, epoch: self.cx.epoch };
        self.cx.actions.push(crate::task::Action::Reply { request, frame: message.frame.clone() });
    }

    fn flag(&mut self, flag: u32, meta: &[u8]) -> usize {
        let Some(spec) = self.spec.flags.get(flag as usize) else { return 0 };
        let Some(&link) = self.spec.links.get(spec.link as usize) else { return 0 };
        let neighbours = self.neighbours(link);
        for &n in &neighbours {
            if !self.spec.role_of(n).is_some_and(|r| spec.receivers.contains(&r)) {
                let why = format!(
                    "{} flags `{}` over `{}` to {}, but graph `{}` declares only {} as receiving it",
                    self.who(),
                    spec.name,
                    link.name,
                    self.describe(n),
                    self.spec.name,
                    self.role_list(spec.receivers),
                );
                self.cx.fail_job(why);
                return 0;
            }
        }
        let mut framed = Vec::with_capacity(meta.len() + 1);
        framed.push(flag as u8);
        framed.extend_from_slice(meta);
        for &n in &neighbours {
            self.cx.actions.push(crate::task::Action::Flag { link: link.id, to: n, meta: framed.clone() });
        }
        neighbours.len()
    }
}

/// Items used by the code that `taskgraph!` and `#[task]` generate.
#[doc(hidden)]
pub mod private {
    use super::*;

    /// The id of the link named `name` among `links`, at compile time; a
    /// compile error listing the links if there is none.
    pub const fn link_id(links: &[LinkType], name: &str, unknown: &'static str) -> u32 {
        let mut i = 0;
        while i < links.len() {
            if str_eq(links[i].name, name) {
                return i as u32;
            }
            i += 1;
        }
        panic!("{}", unknown)
    }

    /// The id of the link named `name` among `links`, or `u32::MAX` (a
    /// spec's link ids; the names are checked with [`link_id`]).
    pub const fn link_index(links: &[LinkType], name: &str) -> u32 {
        let mut i = 0;
        while i < links.len() {
            if str_eq(links[i].name, name) {
                return i as u32;
            }
            i += 1;
        }
        u32::MAX
    }

    const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Proof that a type is a message (an error at the user's type if not).
    pub const fn assert_message<M: Message>() {}

    /// Proof that a struct implements its role's handlers (an error at the
    /// struct if not).
    pub const fn assert_bound<G: Dispatch<T, R>, T, const R: u32>() {}

    /// A struct bound to role `R` of graph `G` by `#[task]`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` makes tasks of a role of `{G}` without being bound to it",
        label = "a role's constructor returns a type with no `#[task({G}::<Role>)]` for that role",
        note = "the role is the field of the graph's tasks struct this constructor fills: bind the struct with `#[task({G}::<Role>)]`"
    )]
    pub trait BoundTo<G, const R: u32> {}

    /// The glue between the runtime and a role's handler trait, written by
    /// `taskgraph!` for every role: `impl<T: WorkerHandlers> Dispatch<T, 1>
    /// for Graph`.
    pub trait Dispatch<T, const R: u32>: Graph {
        /// `init`.
        fn init(task: &mut T, cx: TaskCx<'_>);
        /// `enter_epoch`.
        fn enter_epoch(task: &mut T, cx: TaskCx<'_>, epoch: Epoch);
        /// A fetched message, by edge.
        fn fetched(task: &mut T, cx: TaskCx<'_>, data: Received);
        /// A neighbour's fetch, by edge.
        fn serve(task: &mut T, cx: TaskCx<'_>, request: ServeRequest);
        /// A flag, by flag id.
        fn flagged(task: &mut T, cx: TaskCx<'_>, from: TaskId, flag: u32, meta: &[u8]);
        /// `neighbour_failed`.
        fn neighbour_failed(task: &mut T, cx: TaskCx<'_>, link: LinkType, neighbour: TaskId);
        /// `neighbour_restarted`.
        fn neighbour_restarted(task: &mut T, cx: TaskCx<'_>, link: LinkType, neighbour: TaskId, term: u64);
        /// `exit`.
        fn exit(task: &mut T, cx: TaskCx<'_>);
        /// `became_primary` (a replicated role).
        fn became_primary(task: &mut T, cx: TaskCx<'_>, term: u64) {
            let _ = (task, cx, term);
        }
        /// `became_backup` (a replicated role).
        fn became_backup(task: &mut T, cx: TaskCx<'_>) {
            let _ = (task, cx);
        }
        /// An update of the primary's, as its frame (a replicated role).
        fn apply_update(task: &mut T, cx: TaskCx<'_>, update: &[u8]) {
            let _ = (task, cx, update);
        }
        /// The task's state as an encoded update (a replicated role).
        fn snapshot(task: &T) -> Option<Vec<u8>> {
            let _ = task;
            None
        }
    }

    /// A role's task as a runtime [`Task`].
    pub struct Adapter<G, T, const R: u32> {
        task: T,
        _graph: PhantomData<fn() -> G>,
    }

    impl<G, T, const R: u32> fmt::Debug for Adapter<G, T, R> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Adapter<{}, role {R}>", std::any::type_name::<T>())
        }
    }

    /// Boxes `task` as role `R` of graph `G`.
    pub fn adapt<G: Dispatch<T, R>, T: 'static, const R: u32>(task: T) -> Box<dyn Task> {
        Box::new(Adapter::<G, T, R> { task, _graph: PhantomData })
    }

    impl<G: Dispatch<T, R>, T: 'static, const R: u32> Task for Adapter<G, T, R> {
        fn init(&mut self, cx: &mut Context<'_>) {
            G::init(&mut self.task, TaskCx::new(cx, G::SPEC, R));
        }
        fn enter_epoch(&mut self, cx: &mut Context<'_>, epoch: Epoch) {
            G::enter_epoch(&mut self.task, TaskCx::new(cx, G::SPEC, R), epoch);
        }
        fn data_ready(&mut self, cx: &mut Context<'_>, data: Received) {
            G::fetched(&mut self.task, TaskCx::new(cx, G::SPEC, R), data);
        }
        fn serve(&mut self, cx: &mut Context<'_>, request: ServeRequest) {
            G::serve(&mut self.task, TaskCx::new(cx, G::SPEC, R), request);
        }
        fn meta_ready(&mut self, cx: &mut Context<'_>, from: TaskId, _link: LinkType, meta: &[u8]) {
            // Flags carry their id in the first byte; anything else came
            // from something that is not this graph's code: dropped.
            let known = meta.split_first().filter(|(&id, _)| {
                G::SPEC.flags.get(id as usize).is_some_and(|f| f.receivers.contains(&R))
            });
            match known {
                Some((&id, rest)) => G::flagged(&mut self.task, TaskCx::new(cx, G::SPEC, R), from, id.into(), rest),
                None => tracing::warn!(task = cx.task, from, "dropped a flag this role does not take"),
            }
        }
        fn neighbour_failed(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId) {
            G::neighbour_failed(&mut self.task, TaskCx::new(cx, G::SPEC, R), link, task);
        }
        fn neighbour_restarted(&mut self, cx: &mut Context<'_>, link: LinkType, task: TaskId, term: u64) {
            G::neighbour_restarted(&mut self.task, TaskCx::new(cx, G::SPEC, R), link, task, term);
        }
        fn exit(&mut self, cx: &mut Context<'_>) {
            G::exit(&mut self.task, TaskCx::new(cx, G::SPEC, R));
        }
        fn became_primary(&mut self, cx: &mut Context<'_>, term: u64) {
            G::became_primary(&mut self.task, TaskCx::new(cx, G::SPEC, R), term);
        }
        fn became_backup(&mut self, cx: &mut Context<'_>) {
            G::became_backup(&mut self.task, TaskCx::new(cx, G::SPEC, R));
        }
        fn apply_update(&mut self, cx: &mut Context<'_>, update: &[u8]) {
            G::apply_update(&mut self.task, TaskCx::new(cx, G::SPEC, R), update);
        }
        fn snapshot(&self) -> Option<Vec<u8>> {
            G::snapshot(&self.task)
        }
        fn restore(&mut self, cx: &mut Context<'_>, snapshot: &[u8]) {
            // A snapshot is the whole state as one update.
            G::apply_update(&mut self.task, TaskCx::new(cx, G::SPEC, R), snapshot);
        }
    }

    /// A job of graph `G`: `make(task, role)` builds each task.
    pub fn job<G: Graph>(
        topology: G::Topology,
        tasks: u64,
        make: impl Fn(TaskId, RoleId) -> Box<dyn Task> + Send + Sync + 'static,
    ) -> crate::Job {
        let spec = G::SPEC;
        let mut job = crate::Job::new(spec.job, tasks, topology, move |t| match spec.role_of(t) {
            Some(role) => make(t, role),
            // `Job::check` refuses such a job before any node starts.
            None => Box::new(NoRole),
        })
        .graph(spec);
        for (i, e) in spec.edges.iter().enumerate() {
            job = job.edge(Edge::<()>::new(i as u32, e.name));
        }
        job
    }

    #[derive(Debug)]
    struct NoRole;

    impl Task for NoRole {
        fn enter_epoch(&mut self, cx: &mut Context<'_>, _: Epoch) {
            cx.fail_job(format!("task {} has no role", cx.task));
        }
        fn data_ready(&mut self, _: &mut Context<'_>, _: Received) {}
        fn serve(&mut self, _: &mut Context<'_>, _: ServeRequest) {}
    }

    /// `fetch_<edge>()`: fetches from every neighbour over the edge's link.
    pub fn fetch_all<M>(cx: &mut TaskCx<'_>, edge: Edge<M>) -> usize {
        cx.fetch_all(edge)
    }

    /// `fetch_<edge>_from(task)`.
    pub fn fetch_from<M>(cx: &mut TaskCx<'_>, edge: Edge<M>, from: TaskId) -> bool {
        cx.fetch_from(edge, from)
    }

    /// `reply_<edge>(to, &message)`.
    pub fn reply<M: Message>(cx: &mut TaskCx<'_>, edge: Edge<M>, to: TaskId, message: &M) {
        cx.reply(edge, to, &Encoded::new(message));
    }

    /// `reply_<edge>_encoded(to, &encoded)`.
    pub fn reply_encoded<M>(cx: &mut TaskCx<'_>, edge: Edge<M>, to: TaskId, message: &Encoded<M>) {
        cx.reply(edge, to, message);
    }

    /// `replicate(&update)`.
    pub fn replicate<M: Message>(cx: &mut TaskCx<'_>, update: &M) {
        cx.cx.replicate(update.encode());
    }

    /// Decodes an update from the task's own primary. It cannot fail for
    /// the same program's bytes: if it does, the backup's state is lost
    /// and the job fails (by the panic, on the backup).
    pub fn update<M: Message>(bytes: &[u8]) -> M {
        match M::decode(bytes) {
            Ok(m) => m,
            Err(e) => panic!("a backup cannot read its primary's update: {e}"),
        }
    }

    /// `flag_<name>(meta)`.
    pub fn flag(cx: &mut TaskCx<'_>, flag: u32, meta: &[u8]) -> usize {
        cx.flag(flag, meta)
    }

    /// Decodes a fetched message for its handler; a message that does not
    /// decode fails the job (it came from a neighbour that is not this
    /// graph's code, or is corrupt) and is not delivered.
    pub fn deliver<M: Message>(cx: &mut TaskCx<'_>, edge: Edge<M>, data: &Received) -> Option<Fetched<M>> {
        match (data.decode(edge), data.encoded(edge)) {
            (Ok(message), Ok(frame)) => Some(Fetched { message, frame }),
            (Err(e), _) | (_, Err(e)) => {
                let why = format!("{} got a bad `{}` from task {}: {e}", cx.who(), edge.name, data.from());
                cx.fail_job(why);
                None
            }
        }
    }

    /// Sends a serve handler's answer.
    pub fn serve<M>(cx: &mut TaskCx<'_>, edge: Edge<M>, request: ServeRequest, answer: Serve<M>) {
        if let Some(message) = answer.0 {
            cx.reply(edge, request.from, &message);
        }
    }

    /// A fetched message over an edge this role does not fetch: the
    /// runtime only delivers what a task asked for, so this is not this
    /// graph's code talking; dropped.
    pub fn unexpected_data(cx: &mut TaskCx<'_>, data: &Received) {
        tracing::warn!(task = cx.task(), edge = data.edge(), "dropped data over an edge this role does not fetch");
    }

    /// A fetch of an edge this role does not serve (only a neighbour that
    /// is not this graph's code can ask that): left unanswered.
    pub fn unexpected_request(cx: &mut TaskCx<'_>, request: ServeRequest) {
        tracing::warn!(task = cx.task(), ?request, "a fetch of an edge this role does not serve: not answered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINKS: [LinkType; 2] = [LinkType::with_inverse(0, "parent", 1), LinkType::with_inverse(1, "children", 0)];

    const SPEC: GraphSpec = GraphSpec {
        name: "Tree",
        job: "tree",
        roles: &[
            RoleSpec { name: "Root", first: 0, end: Some(1), replicated: true },
            RoleSpec { name: "Inner", first: 1, end: Some(3), replicated: false },
            RoleSpec { name: "Leaf", first: 3, end: None, replicated: false },
        ],
        edges: &[
            EdgeSpec { name: "param", message: "Param", link: 0, fetchers: &[1, 2], sources: &[0, 1] },
            EdgeSpec { name: "grad", message: "Grad", link: 1, fetchers: &[0, 1], sources: &[1, 2] },
        ],
        flags: &[FlagSpec { name: "stop", link: 1, senders: &[0], receivers: &[1] }],
        links: &LINKS,
    };

    struct Tree(u64);

    impl Topology for Tree {
        fn links(&self) -> &[LinkType] {
            &LINKS
        }
        fn neighbours(&self, link: u32, task: TaskId, _: Epoch) -> Vec<TaskId> {
            match link {
                0 if task > 0 => vec![(task - 1) / 2],
                0 => vec![],
                _ => [2 * task + 1, 2 * task + 2].into_iter().filter(|&c| c < self.0).collect(),
            }
        }
    }

    #[test]
    fn roles_follow_their_ranges() {
        let roles: Vec<_> = (0..6).map(|t| SPEC.role_of(t)).collect();
        assert_eq!(roles, vec![Some(0), Some(1), Some(1), Some(2), Some(2), Some(2)]);
        assert_eq!(SPEC.role_name(2), "Leaf");
        SPEC.check_tasks(1000).unwrap();
        let closed = GraphSpec { roles: &SPEC.roles[..2], ..SPEC };
        closed.check_tasks(3).unwrap();
        assert_eq!(
            closed.check_tasks(5).unwrap_err(),
            "graph `Tree` gives roles to tasks 0..3, but the job has 5 tasks (task 4 has no role)"
        );
        assert_eq!(
            closed.check_tasks(2).unwrap_err(),
            "graph `Tree` gives role `Inner` tasks 1..3, but the job has 2 tasks (0..2): task 2 does not exist; \
             give the job 3 tasks, or change the role's range"
        );
        let wide = GraphSpec {
            roles: &[
                RoleSpec { name: "Root", first: 0, end: Some(1), replicated: false },
                RoleSpec { name: "Worker", first: 1, end: Some(9), replicated: false },
            ],
            ..SPEC
        };
        assert_eq!(
            wide.check_tasks(4).unwrap_err(),
            "graph `Tree` gives role `Worker` tasks 1..9, but the job has 4 tasks (0..4): tasks 4..9 do not exist; \
             give the job 9 tasks, or change the role's range"
        );
        // An open range may have no task at all.
        const OPEN: [RoleSpec; 2] = [SPEC.roles[0], RoleSpec { first: 1, ..SPEC.roles[2] }];
        let open = GraphSpec { roles: &OPEN, ..SPEC };
        open.check_tasks(1).unwrap();
    }

    #[test]
    fn link_ids_are_found_by_name() {
        assert_eq!(private::link_id(&LINKS, "children", "no"), 1);
        assert_eq!(private::link_id(&LINKS, "parent", "no"), 0);
    }

    #[test]
    #[should_panic(expected = "the links are parent, children")]
    fn an_unknown_link_name_panics_with_the_list() {
        private::link_id(&LINKS, "parnt", "the links are parent, children");
    }

    #[test]
    fn pictures_draw_fetches_from_server_to_fetcher_and_flags() {
        let p = SPEC.picture(&Tree(5), 5, 0);
        // Per task in id order: its fetches (edge order), then its flags.
        let arrows = [
            "t1 -->|grad| t0",
            "t2 -->|grad| t0",
            "t0 -.->|stop| t1",
            "t0 -.->|stop| t2",
            "t0 -->|param| t1",
            "t3 -->|grad| t1",
            "t4 -->|grad| t1",
            "t0 -->|param| t2",
            "t1 -->|param| t3",
            "t1 -->|param| t4",
        ];
        let mut want = String::from("%% Tree at epoch 0\nflowchart TD\n");
        for (t, r) in [(0, "Root"), (1, "Inner"), (2, "Inner"), (3, "Leaf"), (4, "Leaf")] {
            want.push_str(&format!("    t{t}[\"{t}: {r}\"]\n"));
        }
        for a in arrows {
            want.push_str(&format!("    {a}\n"));
        }
        assert_eq!(p.to_mermaid(), want);
        let dot = p.to_dot();
        assert!(dot.starts_with("digraph \"Tree\" {\n"), "{dot}");
        assert!(dot.contains("    t0 -> t1 [label=\"stop\", style=dashed];\n"), "{dot}");
        assert!(dot.contains("    t1 -> t0 [label=\"grad\"];\n"), "{dot}");
    }
}
