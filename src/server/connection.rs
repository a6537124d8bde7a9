//! One client connection: reads size-prefixed request frames, runs each request as its own task
//! (so pipelined produce requests share group commits), and writes the responses strictly in
//! request order. Runs on: the shard that accepted the connection. Invariants: a frame's size is
//! checked before its body is read and the body's memory is committed only as bytes arrive; at most
//! `IN_FLIGHT_MAX` requests per connection are in progress (backpressure on the reader); an
//! unrecoverable framing or decoding error closes this connection only.

use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use super::handlers::{self, Reply};
use crate::constants::CONNECTION_IN_FLIGHT_BYTES_MAX;
use crate::protocol::check_frame_size;
use crate::protocol::fetch_response::Piece;
use crate::runtime::io::{self, TcpStream};
use crate::runtime::splice;
use crate::shard::ShardRef;
use crate::storage::FetchRecords;

/// A request in progress: its handler task, its share of the byte budget, its API key.
type InFlight = (io::Task<Reply>, io::BudgetPermit, i16);

/// Requests of one connection in progress at once (librdkafka pipelines up to 5 per broker for
/// idempotent producers, up to 1M otherwise).
const IN_FLIGHT_MAX: usize = 64;
/// Kafka's Produce API key.
const PRODUCE_API_KEY: i16 = 0;
/// Largest chunk the body buffer grows by per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Serves `stream` until the client closes it or sends something unrecoverable.
pub async fn serve(shard: ShardRef, stream: TcpStream) {
    // Kafka shows a member's host as `/ip` (DescribeGroups).
    let peer_host: std::rc::Rc<str> = stream
        .peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default()
        .into();
    let mut reader = io::SharedStream::new(stream);
    let _ = reader.set_nodelay(true);
    // The writer task shares the descriptor: reads and writes proceed independently.
    let writer = reader.clone();
    let (queue_tx, queue_rx) = io::local_queue::<InFlight>(IN_FLIGHT_MAX);
    crate::metrics::with(|m| {
        m.connections_active.fetch_add(1, Relaxed);
    });
    // Frame bytes held by requests in progress; a permit is returned when its response is
    // written, so one connection never holds more than CONNECTION_IN_FLIGHT_BYTES_MAX.
    let budget = io::Budget::new(CONNECTION_IN_FLIGHT_BYTES_MAX);
    let writer_task = io::spawn_joinable(write_responses(writer, queue_rx));
    let max_bytes = shard.config.socket_request_max_bytes;
    let sequencer = crate::shard::Sequencer::new();
    loop {
        let frame = match read_frame(&mut reader, max_bytes, &budget).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(why) => {
                tracing::debug!(reason = %why, "closing connection");
                break;
            }
        };
        let (frame, permit) = frame;
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        crate::metrics::with(|m| m.request(api_key, frame.len() + 4));
        let shard = shard.clone();
        let peer = peer_host.clone();
        // Produces take their turn in read order: their partition work is handed to the owners
        // in that order, whatever each one waits for on the way.
        let turn = (api_key == PRODUCE_API_KEY).then(|| sequencer.turn());
        let task =
            io::spawn_joinable(async move { handlers::handle(&shard, frame, &peer, turn).await });
        if !queue_tx.push((task, permit, api_key)).await {
            break;
        }
    }
    drop(queue_tx);
    writer_task.join().await;
    reader.shutdown();
    crate::metrics::with(|m| {
        m.connections_active.fetch_sub(1, Relaxed);
    });
}

/// Reads one frame, holding its size in `budget`; `Ok(None)` on a clean end of stream.
async fn read_frame(
    stream: &mut io::SharedStream,
    max_bytes: u32,
    budget: &io::Budget,
) -> Result<Option<(Bytes, io::BudgetPermit)>, String> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let size =
        check_frame_size(i32::from_be_bytes(size), max_bytes).map_err(|e| format!("{e:?}"))?;
    let permit = budget.take(size as u64).await;
    // Reserved whole (address space only: pages are committed when first written), so the
    // body is never reallocated and copied as it grows; bytes are zeroed and read a chunk at
    // a time, so committed memory follows the bytes that arrived.
    let mut body = BytesMut::with_capacity(size);
    while body.len() < size {
        let start = body.len();
        let grow = (size - start).min(READ_CHUNK_BYTES);
        body.resize(start + grow, 0);
        stream
            .read_exact(&mut body[start..])
            .await
            .map_err(|e| format!("truncated frame: {e}"))?;
    }
    Ok(Some((body.freeze(), permit)))
}

async fn write_responses(mut writer: io::SharedStream, queue: io::LocalQueueReceiver<InFlight>) {
    // The permit lives until the response is written (end of the loop body).
    while let Some((task, _permit, api_key)) = queue.pop().await {
        match task.join().await {
            Reply::Send(bytes) => {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
                crate::metrics::with(|m| m.response(api_key, bytes.len()));
            }
            Reply::Parts(pieces) => {
                let bytes = pieces.iter().map(piece_len).sum();
                crate::metrics::with(|m| m.response(api_key, bytes));
                if let Err(e) = write_pieces(&mut writer, pieces).await {
                    tracing::debug!(error = %e, "closing connection: sending a fetch failed");
                    break;
                }
            }
            Reply::Nothing => {}
            Reply::Close(why) => {
                tracing::debug!(reason = %why, "closing connection after a bad request");
                break;
            }
        }
    }
    let _ = writer.flush().await;
    writer.shutdown();
}

fn piece_len(piece: &Piece<FetchRecords>) -> usize {
    match piece {
        Piece::Bytes(b) => b.len(),
        Piece::Records(r) => r.len(),
    }
}

/// Writes a Fetch response: bytes with write, file ranges with splice (zero-copy).
async fn write_pieces(
    writer: &mut io::SharedStream,
    pieces: Vec<Piece<FetchRecords>>,
) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Bytes(bytes) | Piece::Records(FetchRecords::Memory(bytes)) => {
                writer.write_all(&bytes).await?
            }
            Piece::Records(FetchRecords::File(range)) => {
                // glommio's stream keeps no write buffer: what write_all wrote is in the socket.
                splice::send_file_range(writer.as_raw_fd(), &range.file, range.position, range.len)
                    .await?
            }
        }
    }
    Ok(())
}
