# The node-to-node protocol of taskgraph.
#
# Every node serves one `Node` capability over capnp-rpc (two-party, TCP).
# Application payloads are the Cap'n Proto frames that
# `taskgraph::message::Message::encode` writes: encoded once by the serving
# task, cached by the responder for the epoch (so a retried request gets
# the very same bytes), and shipped in chunks of at most 8 MiB so that no
# RPC message comes near capnp's 64 MiB limit.
#
# The Rust code in runtime/src/protocol/taskgraph_capnp.rs is generated
# from this file by capnpc and committed; the test suite fails if the two
# ever differ (regenerate with TASKGRAPH_BLESS=1, see tests/tests/protocol.rs).

@0xd2488a5d39828713;

interface Node {
  fetch @0 (request :FetchRequest) -> (response :FetchResponse);
  # Asks for message `edge` of task `toTask` at `epoch`. The answer may
  # come later: the serving task replies when its data for the epoch is
  # ready. Retries of the same (fromTask, requesterTerm, epoch, edge, seq)
  # get the same bytes.

  chunk @1 (transfer :UInt64, index :UInt32) -> (data :Data);
  # Chunk `index` (counting from 1; chunk 0 came with the response) of a
  # response larger than one chunk.

  flag @2 (flag :MetaFlag) -> (status :Status);
  # A meta flag: "I have something for you over this link".

  ping @3 () -> (info :NodeInfo);
  # What this node is and does right now.

  replicate @4 (batch :Replication) -> (status :Status, applied :UInt64);
  # From a task's primary to one of its backups: the next entries of the
  # task's replication stream, in order. Answered once the backup has
  # applied them (the primary waits for that before anything it did
  # becomes visible to other tasks), with the position the backup has
  # applied up to (the primary resends from there if they disagree).
}

struct FetchRequest {
  job @0 :Text;
  epoch @1 :UInt64;
  fromTask @2 :UInt64;       # the task asking
  toTask @3 :UInt64;         # the task asked
  edge @4 :UInt32;           # which message (an edge id of the graph)
  seq @5 :UInt64;            # the requester's number for this fetch
  requesterTerm @6 :UInt64;  # the term of the node asking, for fencing
  responderTerm @7 :UInt64;  # the term the requester expects of `toTask` (0: any)
}

struct FetchResponse {
  status @0 :Status;
  payload @1 :Data;          # the message frame, or its first chunk
  totalBytes @2 :UInt64;     # the size of the whole frame
  chunks @3 :UInt32;         # 1 when `payload` is the whole frame
  transfer @4 :UInt64;       # the id to ask `chunk` for the rest with
}

struct Status {
  kind @0 :StatusKind;
  detail @1 :Text;
  epoch @2 :UInt64;          # the responder's current epoch
  term @3 :UInt64;           # the responder's term for the task asked
}

enum StatusKind {
  ok @0;
  wrongJob @1;               # the node runs another job
  staleEpoch @2;             # the request's epoch is over
  unknownTask @3;            # no such task in the job
  notPrimary @4;             # this node is not the task's primary (now)
  staleTerm @5;              # a term that has ended
  unknownEdge @6;            # the task serves no such message
  tooLarge @7;
  shuttingDown @8;           # the job ended
  badRequest @9;             # a field out of range
  internal @10;              # a failure of the node itself
}

struct MetaFlag {
  job @0 :Text;
  epoch @1 :UInt64;
  fromTask @2 :UInt64;
  toTask @3 :UInt64;
  link @4 :UInt32;           # the link type it travels over (from the receiver's side)
  meta @5 :Data;             # small, application-defined
  term @6 :UInt64;           # the sender's term
}

struct Replication {
  job @0 :Text;
  task @1 :UInt64;
  term @2 :UInt64;           # the sending primary's term
  first @3 :UInt64;          # the stream position of the first entry (from 1)
  entries @4 :List(ReplicaEntry);
  end @5 :UInt64;            # the position the stream has reached on the primary
}

struct ReplicaEntry {
  union {
    start @0 :Void;          # the stream starts: from the task's initial state
    snapshot @1 :Data;       # the task's whole state, replacing all before it
    update @2 :Data;         # an update the primary's task made
    served :group {          # a reply the primary released (or part of one)
      epoch @3 :UInt64;
      edge @4 :UInt32;
      requester @5 :UInt64;
      part @6 :Data;
      last @7 :Bool;         # the reply's last part
    }
  }
}

struct NodeInfo {
  nodeId @0 :UInt64;
  job @1 :Text;
  task @2 :Int64;            # -1 for a spare
  term @3 :UInt64;
  epoch @4 :UInt64;
}
