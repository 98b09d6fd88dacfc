//! A snapshot's data as openraft reads and writes it: one file. A snapshot this node took is
//! a checkpoint of its store, which becomes a file only when it is first read (to be sent to
//! a follower that fell behind the purged log), so taking one costs no copy of the store.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::io::SeekFrom;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// Packs a checkpoint into one file, on a blocking thread: the file's path, and it opened.
pub(super) type Pack = Box<dyn FnOnce() -> std::io::Result<(PathBuf, std::fs::File)> + Send>;

/// A snapshot file being sent, received or installed: openraft's snapshot data.
pub struct SnapshotFile {
    state: State,
    /// A seek asked for before the file was packed, done once it is.
    seek: Option<SeekFrom>,
}

enum State {
    Open {
        file: tokio::fs::File,
        path: PathBuf,
    },
    /// A checkpoint not packed yet; `None` once its packing started.
    Unpacked(Option<Pack>),
    Packing(tokio::task::JoinHandle<std::io::Result<(PathBuf, std::fs::File)>>),
}

impl SnapshotFile {
    /// The snapshot file at `path`, opened as `file`.
    pub(super) fn open(path: PathBuf, file: std::fs::File) -> Self {
        SnapshotFile {
            state: State::Open {
                file: tokio::fs::File::from_std(file),
                path,
            },
            seek: None,
        }
    }

    /// A checkpoint that `pack` makes a file of, the first time it is read.
    pub(super) fn unpacked(pack: Pack) -> Self {
        SnapshotFile {
            state: State::Unpacked(Some(pack)),
            seek: None,
        }
    }

    /// Where the file is; `None` for a checkpoint not packed yet.
    #[cfg(test)]
    pub(super) fn path(&self) -> Option<&Path> {
        match &self.state {
            State::Open { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Where the file is, packing it first if it is a checkpoint.
    pub(in crate::replication) async fn ready(&mut self) -> std::io::Result<&Path> {
        std::future::poll_fn(|cx| self.poll_open(cx).map_ok(drop)).await?;
        match &self.state {
            State::Open { path, .. } => Ok(path),
            _ => Err(std::io::Error::other(
                "a snapshot file not open once packed",
            )),
        }
    }

    /// The open file, once a checkpoint is packed (and a seek asked for meanwhile started).
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<&mut tokio::fs::File>> {
        loop {
            match &mut self.state {
                State::Open { .. } => break,
                State::Unpacked(pack) => {
                    let pack = pack
                        .take()
                        .ok_or_else(|| std::io::Error::other("a snapshot packed twice"))?;
                    self.state = State::Packing(tokio::task::spawn_blocking(pack));
                }
                State::Packing(job) => {
                    let (path, file) =
                        ready!(Pin::new(job).poll(cx)).map_err(std::io::Error::other)??;
                    self.state = State::Open {
                        file: tokio::fs::File::from_std(file),
                        path,
                    };
                    if let (Some(position), State::Open { file, .. }) = (self.seek, &mut self.state)
                    {
                        Pin::new(file).start_seek(position)?;
                    }
                }
            }
        }
        match &mut self.state {
            State::Open { file, .. } => Poll::Ready(Ok(file)),
            _ => Poll::Ready(Err(std::io::Error::other(
                "a snapshot file not open once packed",
            ))),
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.seek.is_some() {
            // A seek started before the file was open must complete before a read.
            ready!(Pin::new(&mut *this).poll_complete(cx))?;
        }
        let file = ready!(this.poll_open(cx))?;
        Pin::new(file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let file = ready!(self.poll_open(cx))?;
        Pin::new(file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let file = ready!(self.poll_open(cx))?;
        Pin::new(file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let file = ready!(self.poll_open(cx))?;
        Pin::new(file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        match &mut self.state {
            State::Open { file, .. } => Pin::new(file).start_seek(position),
            _ => {
                self.seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        let file = ready!(self.poll_open(cx))?;
        let done = ready!(Pin::new(file).poll_complete(cx));
        self.seek = None;
        Poll::Ready(done)
    }
}
