//! Every mapping between the transport's vocabulary and the capnp of
//! `schemas/taskgraph.capnp`, both directions: what the TCP client
//! writes and its server reads (and back), and what the in-memory
//! transport passes through capnp so that it receives exactly what TCP
//! would ([`through_wire`]).

use std::sync::Arc;

use crate::protocol::taskgraph_capnp::{
    fetch_request, fetch_response, meta_flag, node_info, replica_entry, replication, status, StatusKind as WireKind,
};

use super::{Answer, FetchRequest, MetaFlag, ReplicaEntry, Replication, Shared, Status, StatusKind, CHUNK_BYTES, RECEIVE_LIMIT_WORDS};

/// How every connection reads what it receives: a chunk plus headers at
/// most, and shallow nesting.
pub(super) fn receive_options() -> capnp::message::ReaderOptions {
    let mut options = capnp::message::ReaderOptions::new();
    options.traversal_limit_in_words(Some(RECEIVE_LIMIT_WORDS)).nesting_limit(16);
    options
}

/// About what an RPC message adds to the struct it carries (the call's
/// header and the pointers to its parameters), in words.
const RPC_HEADER_WORDS: usize = 17;

/// The failure of a message that capnp's receiver refuses to read for
/// its size, as the TCP client hears of it (in capnp-futures' words).
fn too_large(words: usize) -> capnp::Error {
    capnp::Error::failed(format!(
        "remote exception: Message has {words} words, which is too large. To increase the limit on the receiving end, see \
         capnp::message::ReaderOptions."
    ))
}

/// Writes a message with `write`, and reads it back with `read` as a TCP
/// receiver would, without the socket: `Err` if the receiver refuses the
/// message for its size, else what `read` makes of it (`Err`: malformed).
pub(super) fn through_wire<O, T>(
    write: impl FnOnce(O::Builder<'_>),
    read: impl FnOnce(O::Reader<'_>) -> capnp::Result<T>,
) -> Result<capnp::Result<T>, capnp::Error>
where
    O: capnp::traits::Owned,
{
    let mut message = capnp::message::Builder::new_default();
    write(message.init_root::<O::Builder<'_>>());
    let words = message.size_in_words() + RPC_HEADER_WORDS;
    if words > RECEIVE_LIMIT_WORDS {
        return Err(too_large(words));
    }
    Ok(message.get_root_as_reader::<O::Reader<'_>>().and_then(read))
}

fn kind_to_wire(kind: StatusKind) -> WireKind {
    use WireKind as W;
    match kind {
        StatusKind::Ok => W::Ok,
        StatusKind::WrongJob => W::WrongJob,
        StatusKind::StaleEpoch => W::StaleEpoch,
        StatusKind::UnknownTask => W::UnknownTask,
        StatusKind::NotPrimary => W::NotPrimary,
        StatusKind::StaleTerm => W::StaleTerm,
        StatusKind::UnknownEdge => W::UnknownEdge,
        StatusKind::TooLarge => W::TooLarge,
        StatusKind::ShuttingDown => W::ShuttingDown,
        StatusKind::BadRequest => W::BadRequest,
        StatusKind::Internal => W::Internal,
    }
}

fn kind_from_wire(w: WireKind) -> StatusKind {
    use WireKind as W;
    match w {
        W::Ok => StatusKind::Ok,
        W::WrongJob => StatusKind::WrongJob,
        W::StaleEpoch => StatusKind::StaleEpoch,
        W::UnknownTask => StatusKind::UnknownTask,
        W::NotPrimary => StatusKind::NotPrimary,
        W::StaleTerm => StatusKind::StaleTerm,
        W::UnknownEdge => StatusKind::UnknownEdge,
        W::TooLarge => StatusKind::TooLarge,
        W::ShuttingDown => StatusKind::ShuttingDown,
        W::BadRequest => StatusKind::BadRequest,
        W::Internal => StatusKind::Internal,
    }
}

pub(super) fn write_status(s: &Status, mut b: status::Builder<'_>) {
    b.set_kind(kind_to_wire(s.kind));
    b.set_detail(s.detail.as_str());
    b.set_epoch(s.epoch);
    b.set_term(s.term);
}

pub(super) fn read_status(r: status::Reader<'_>) -> capnp::Result<Status> {
    Ok(Status {
        kind: kind_from_wire(r.get_kind()?),
        detail: r.get_detail()?.to_string().unwrap_or_default(),
        epoch: r.get_epoch(),
        term: r.get_term(),
    })
}

pub(super) fn write_request(req: &FetchRequest, mut r: fetch_request::Builder<'_>) {
    r.set_job(req.job.as_str());
    r.set_epoch(req.epoch);
    r.set_from_task(req.from_task);
    r.set_to_task(req.to_task);
    r.set_edge(req.edge);
    r.set_seq(req.seq);
    r.set_requester_term(req.requester_term);
    r.set_responder_term(req.responder_term);
}

pub(super) fn read_request(r: fetch_request::Reader<'_>) -> capnp::Result<FetchRequest> {
    Ok(FetchRequest {
        job: r.get_job()?.to_string()?,
        epoch: r.get_epoch(),
        from_task: r.get_from_task(),
        to_task: r.get_to_task(),
        edge: r.get_edge(),
        seq: r.get_seq(),
        requester_term: r.get_requester_term(),
        responder_term: r.get_responder_term(),
    })
}

/// The first part of a fetch's answer.
pub(super) struct FirstChunk {
    pub(super) term: u64,
    pub(super) frame: Vec<u8>,
    pub(super) total: u64,
    pub(super) chunks: u32,
    pub(super) transfer: u64,
}

/// Writes a fetch's answer: an error status, or the frame's first chunk,
/// its size and, when it takes more than one chunk, the transfer to ask
/// for the rest with (`transfer` makes one).
pub(super) fn write_response(
    answer: &Answer,
    ok: Status,
    transfer: impl FnOnce(&Arc<Vec<u8>>) -> u64,
    mut response: fetch_response::Builder<'_>,
) {
    match answer {
        Err(status) => write_status(status, response.init_status()),
        Ok(frame) => {
            write_status(&ok, response.reborrow().init_status());
            let chunks = frame.len().div_ceil(CHUNK_BYTES).max(1);
            response.set_total_bytes(frame.len() as u64);
            response.set_chunks(chunks as u32);
            response.set_payload(&frame[..frame.len().min(CHUNK_BYTES)]);
            if chunks > 1 {
                response.set_transfer(transfer(frame));
            }
        }
    }
}

/// Reads a fetch's answer: its first chunk, or the error status.
pub(super) fn read_response(r: fetch_response::Reader<'_>) -> capnp::Result<Result<FirstChunk, Status>> {
    let status = read_status(r.get_status()?)?;
    if status.kind != StatusKind::Ok {
        return Ok(Err(status));
    }
    Ok(Ok(FirstChunk {
        term: status.term,
        frame: r.get_payload()?.to_vec(),
        total: r.get_total_bytes(),
        chunks: r.get_chunks(),
        transfer: r.get_transfer(),
    }))
}

pub(super) fn write_flag(flag: &MetaFlag, mut f: meta_flag::Builder<'_>) {
    f.set_job(flag.job.as_str());
    f.set_epoch(flag.epoch);
    f.set_from_task(flag.from_task);
    f.set_to_task(flag.to_task);
    f.set_link(flag.link);
    f.set_meta(&flag.meta);
    f.set_term(flag.term);
}

pub(super) fn read_flag(f: meta_flag::Reader<'_>) -> capnp::Result<MetaFlag> {
    Ok(MetaFlag {
        job: f.get_job()?.to_string()?,
        epoch: f.get_epoch(),
        from_task: f.get_from_task(),
        to_task: f.get_to_task(),
        link: f.get_link(),
        meta: f.get_meta()?.to_vec(),
        term: f.get_term(),
    })
}

pub(super) fn write_replication(batch: &Replication, mut b: replication::Builder<'_>) {
    b.set_job(batch.job.as_str());
    b.set_task(batch.task);
    b.set_term(batch.term);
    b.set_first(batch.first);
    b.set_end(batch.end);
    let mut list = b.init_entries(batch.entries.len() as u32);
    for (i, e) in batch.entries.iter().enumerate() {
        let mut w = list.reborrow().get(i as u32);
        match e {
            ReplicaEntry::Start => w.set_start(()),
            ReplicaEntry::Snapshot(d) => w.set_snapshot(d),
            ReplicaEntry::Update(d) => w.set_update(d),
            ReplicaEntry::Served { epoch, edge, requester, frame, range, last } => {
                let mut g = w.init_served();
                g.set_epoch(*epoch);
                g.set_edge(*edge);
                g.set_requester(*requester);
                g.set_part(&frame[range.clone()]);
                g.set_last(*last);
            }
        }
    }
}

/// Reads a replication batch: a served part arrives as a frame of its
/// own (`range` all of it).
pub(super) fn read_replication(r: replication::Reader<'_>) -> capnp::Result<Replication> {
    use replica_entry::Which;
    let mut entries = Vec::new();
    for e in r.get_entries()?.iter() {
        entries.push(match e.which()? {
            Which::Start(()) => ReplicaEntry::Start,
            Which::Snapshot(d) => ReplicaEntry::Snapshot(Arc::new(d?.to_vec())),
            Which::Update(d) => ReplicaEntry::Update(Arc::new(d?.to_vec())),
            Which::Served(g) => {
                let part = g.get_part()?.to_vec();
                let len = part.len();
                ReplicaEntry::Served {
                    epoch: g.get_epoch(),
                    edge: g.get_edge(),
                    requester: g.get_requester(),
                    frame: Arc::new(part),
                    range: 0..len,
                    last: g.get_last(),
                }
            }
        });
    }
    Ok(Replication { job: r.get_job()?.to_string()?, task: r.get_task(), term: r.get_term(), first: r.get_first(), entries, end: r.get_end() })
}

/// What `ping` answers: the node as its server side knows it.
pub(super) fn write_info(shared: &Shared, mut info: node_info::Builder<'_>) {
    info.set_node_id(shared.node_id);
    info.set_job(shared.job.as_str());
    info.set_task(shared.task.get());
    info.set_term(shared.term.get());
    info.set_epoch(shared.epoch.get());
}
