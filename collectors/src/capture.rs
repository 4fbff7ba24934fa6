//! Reading packets through libpcap (IN-5): capture files ([`PcapFile`]) and
//! live interfaces ([`LiveCapture`], a mirror/SPAN port). With the socket
//! receivers, the only part of this crate that does I/O.
//!
//! Both yield [`Frame`]s — capture time, link type and bytes — and leave
//! their meaning to [`crate::packet`] and the decoders; [`captured`] starts
//! the [`FlowRecord`] levee accounts for a packet (one packet, unsampled),
//! which `packet::parse_into` completes (IP length from the header). libpcap reads pcap and pcapng; a
//! damaged or truncated file ends with an error after the frames that could
//! be read.

use std::path::Path;

use crate::packet::LinkType;
use crate::record::{Addr, FlowRecord};

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Capture time, Unix microseconds.
    pub time_us: u64,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length on the wire (`data` may be shorter: the snap length).
    pub wire_len: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: pcap::Error,
    },
    #[error("{path}: link type {linktype} is not Ethernet, Linux cooked, raw IP or loopback")]
    LinkType { path: String, linktype: i32 },
    #[error("{path}: after {frames} frames: {source}")]
    Read {
        path: String,
        frames: u64,
        #[source]
        source: pcap::Error,
    },
}

/// A pcap or pcapng file opened for reading.
pub struct PcapFile {
    cap: pcap::Capture<pcap::Offline>,
    link: LinkType,
    path: String,
    frames: u64,
}

impl PcapFile {
    pub fn open(path: &Path) -> Result<PcapFile, CaptureError> {
        let name = path.display().to_string();
        let cap = pcap::Capture::from_file(path).map_err(|source| CaptureError::Open {
            path: name.clone(),
            source,
        })?;
        let dl = cap.get_datalink().0;
        let link =
            u32::try_from(dl)
                .ok()
                .and_then(LinkType::from_pcap)
                .ok_or(CaptureError::LinkType {
                    path: name.clone(),
                    linktype: dl,
                })?;
        Ok(PcapFile {
            cap,
            link,
            path: name,
            frames: 0,
        })
    }

    pub fn link(&self) -> LinkType {
        self.link
    }

    /// The next frame; `None` at the end of the file.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, CaptureError>> {
        match self.cap.next_packet() {
            Ok(p) => {
                self.frames += 1;
                let ts = p.header.ts;
                let time_us = (ts.tv_sec.max(0) as u64) * 1_000_000 + ts.tv_usec.max(0) as u64;
                Some(Ok(Frame {
                    time_us,
                    link: self.link,
                    data: p.data,
                    wire_len: p.header.len,
                }))
            }
            Err(pcap::Error::NoMorePackets) => None,
            Err(source) => Some(Err(CaptureError::Read {
                path: self.path.clone(),
                frames: self.frames,
                source,
            })),
        }
    }
}

/// The record of one captured packet before [`crate::packet::parse_into`]
/// fills in what the packet says: counted once, unsampled, seen at
/// `time_ms` by `exporter`.
#[inline]
pub fn captured(time_ms: u64, exporter: Addr) -> FlowRecord {
    FlowRecord {
        time_ms,
        packets: 1,
        exporter,
        sampling: 1,
        ..FlowRecord::default()
    }
}

/// Drop counters libpcap reports for a live capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureDrops {
    /// No room in the kernel buffer: levee read too slowly.
    pub kernel: u32,
    /// Dropped by the interface or its driver.
    pub interface: u32,
}

/// A live capture on an interface (a mirror port).
///
/// The handle is non-blocking and waited on with `poll(2)`: with immediate
/// delivery, libpcap ignores its own read timeout on Linux, and a reader
/// that blocks forever could not notice shutdown.
pub struct LiveCapture {
    cap: pcap::Capture<pcap::Active>,
    link: LinkType,
    name: String,
    poll_ms: i32,
    /// The last read found nothing: wait on the fd before the next one.
    idle: bool,
}

impl std::fmt::Debug for LiveCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCapture")
            .field("interface", &self.name)
            .finish()
    }
}

impl LiveCapture {
    /// Opens `interface` (promiscuous, immediate delivery, `snaplen` bytes per
    /// packet, a kernel buffer of `buffer` bytes) with an optional BPF filter.
    /// `poll_ms` bounds how long [`LiveCapture::next_frame`] waits.
    pub fn open(
        interface: &str,
        filter: &str,
        snaplen: u32,
        buffer: usize,
        poll_ms: i32,
    ) -> Result<LiveCapture, CaptureError> {
        let err = |source| CaptureError::Open {
            path: interface.to_owned(),
            source,
        };
        let mut cap = pcap::Capture::from_device(interface)
            .map_err(err)?
            .promisc(true)
            .immediate_mode(true)
            .snaplen(snaplen.min(i32::MAX as u32) as i32)
            .buffer_size(buffer.min(i32::MAX as usize) as i32)
            .timeout(poll_ms)
            .open()
            .map_err(err)?
            .setnonblock()
            .map_err(err)?;
        if !filter.trim().is_empty() {
            cap.filter(filter, true).map_err(err)?;
        }
        let dl = cap.get_datalink().0;
        let link =
            u32::try_from(dl)
                .ok()
                .and_then(LinkType::from_pcap)
                .ok_or(CaptureError::LinkType {
                    path: interface.to_owned(),
                    linktype: dl,
                })?;
        Ok(LiveCapture {
            cap,
            link,
            name: interface.to_owned(),
            poll_ms,
            idle: true,
        })
    }

    pub fn interface(&self) -> &str {
        &self.name
    }

    /// The next frame, or `Ok(None)` when the poll interval passed with none.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        // Wait only after a read found nothing: while packets flow, reading
        // costs no extra system call.
        if self.idle {
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&self.cap),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, self.poll_ms) };
        }
        let next = self.cap.next_packet();
        self.idle = matches!(next, Err(pcap::Error::TimeoutExpired));
        match next {
            Ok(p) => {
                let ts = p.header.ts;
                Ok(Some(Frame {
                    time_us: (ts.tv_sec.max(0) as u64) * 1_000_000 + ts.tv_usec.max(0) as u64,
                    link: self.link,
                    data: p.data,
                    wire_len: p.header.len,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => Ok(None),
            Err(source) => Err(CaptureError::Read {
                path: self.name.clone(),
                frames: 0,
                source,
            }),
        }
    }

    /// What libpcap says it dropped so far.
    pub fn drops(&mut self) -> CaptureDrops {
        self.cap
            .stats()
            .map(|s| CaptureDrops {
                kernel: s.dropped,
                interface: s.if_dropped,
            })
            .unwrap_or_default()
    }
}
