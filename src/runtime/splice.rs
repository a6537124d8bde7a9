//! Zero-copy sends of segment file ranges: splice file → pipe → socket, on a per-shard io_uring
//! ring of our own (glommio's rings do not offer splice). The file is an ordinary read-only
//! descriptor, so bytes move from the page cache (or the disk, in an io-wq worker) to the socket
//! without passing through user memory. Runs on: the connection's shard; the ring is
//! thread-local. Invariants: a pipe returns to the pool only when it is empty; completions are
//! reaped by whichever waiter polls first and handed out by id, so concurrent sends on one shard
//! never see each other's results.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Error, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use super::io;

const RING_ENTRIES: u32 = 256;
/// Pipe capacity asked for (the default 64 KiB would need 16 round trips per MiB).
const PIPE_BYTES: i32 = 1 << 20;
/// Waiters yield this many times before they start to sleep between polls.
const YIELDS_BEFORE_SLEEP: u32 = 32;
const SLEEP_MIN: Duration = Duration::from_micros(20);
const SLEEP_MAX: Duration = Duration::from_millis(1);

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity_bytes: usize,
}

struct Ring {
    ring: IoUring,
    done: HashMap<u64, i32>,
    next_id: u64,
    pipes: Vec<Pipe>,
}

thread_local! {
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
}

fn with_ring<T>(f: impl FnOnce(&mut Ring) -> std::io::Result<T>) -> std::io::Result<T> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Ring {
                ring: IoUring::new(RING_ENTRIES)?,
                done: HashMap::new(),
                next_id: 1,
                pipes: Vec::new(),
            });
        }
        f(slot.as_mut().expect("the ring was just made"))
    })
}

impl Ring {
    fn submit(&mut self, entry: squeue::Entry) -> std::io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let entry = entry.user_data(id);
        // SAFETY: every buffer an entry names is a file descriptor kept open by its caller
        // until the completion arrives (the caller awaits it).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
        }
        self.ring.submit()?;
        Ok(id)
    }

    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            self.done.insert(cqe.user_data(), cqe.result());
        }
    }

    fn take_pipe(&mut self) -> std::io::Result<Pipe> {
        if let Some(p) = self.pipes.pop() {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Error::last_os_error());
        }
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A smaller pipe still works; ask, then read back what we got.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Pipe {
            read,
            write,
            capacity_bytes: got.max(4096) as usize,
        })
    }
}

/// Submits one entry and waits for its result (a negative errno on failure).
async fn complete(entry: squeue::Entry) -> std::io::Result<i32> {
    let id = with_ring(|r| r.submit(entry))?;
    let (mut polls, mut nap) = (0u32, SLEEP_MIN);
    loop {
        if let Some(result) = with_ring(|r| {
            r.reap();
            Ok(r.done.remove(&id))
        })? {
            return Ok(result);
        }
        if polls < YIELDS_BEFORE_SLEEP {
            polls += 1;
            io::yield_now().await;
        } else {
            io::sleep(nap).await;
            nap = (nap * 2).min(SLEEP_MAX);
        }
    }
}

/// Sends `len` bytes of `file` from `position` to the socket `socket`.
pub async fn send_file_range(
    socket: RawFd,
    file: &File,
    mut position: u64,
    mut len: usize,
) -> std::io::Result<()> {
    let pipe = with_ring(|r| r.take_pipe())?;
    // Ask for the whole range at once: a cold range is then read in large requests rather
    // than the device's read-ahead window at a time (the advice's result does not matter).
    if len > pipe.capacity_bytes {
        let advise = opcode::Fadvise::new(
            types::Fd(file.as_raw_fd()),
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        )
        .offset(position)
        .build();
        let _ = complete(advise).await?;
    }
    while len > 0 {
        let chunk = len.min(pipe.capacity_bytes);
        let fill = opcode::Splice::new(
            types::Fd(file.as_raw_fd()),
            position as i64,
            types::Fd(pipe.write.as_raw_fd()),
            -1,
            chunk as u32,
        )
        .build();
        let filled = complete(fill).await?;
        if filled < 0 {
            return Err(Error::from_raw_os_error(-filled));
        }
        if filled == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "segment file shorter than the range",
            ));
        }
        drain_pipe(&pipe, socket, filled as usize).await?;
        position += filled as u64;
        len -= filled as usize;
    }
    with_ring(|r| {
        r.pipes.push(pipe);
        Ok(())
    })
}

/// Moves `bytes` from the pipe into the socket, waiting for room when the socket is full.
async fn drain_pipe(pipe: &Pipe, socket: RawFd, mut bytes: usize) -> std::io::Result<()> {
    while bytes > 0 {
        let out = opcode::Splice::new(
            types::Fd(pipe.read.as_raw_fd()),
            -1,
            types::Fd(socket),
            -1,
            bytes as u32,
        )
        .build();
        match complete(out).await? {
            n if n > 0 => bytes -= n as usize,
            0 => {
                return Err(Error::new(
                    ErrorKind::WriteZero,
                    "socket closed during splice",
                ))
            }
            e if -e == libc::EAGAIN => {
                let room = opcode::PollAdd::new(types::Fd(socket), libc::POLLOUT as u32).build();
                let r = complete(room).await?;
                if r < 0 {
                    return Err(Error::from_raw_os_error(-r));
                }
            }
            e => return Err(Error::from_raw_os_error(-e)),
        }
    }
    Ok(())
}
