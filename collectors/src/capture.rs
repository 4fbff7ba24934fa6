//! Reading packets through libpcap (IN-5): capture files now, live
//! interfaces with the receivers. With the socket receivers, the only part
//! of this crate that does I/O.
//!
//! [`PcapFile`] yields [`Frame`]s — capture time, link type and bytes — and
//! leaves their meaning to [`crate::packet`] and the decoders. libpcap reads
//! pcap and pcapng; a damaged or truncated file ends with an error after the
//! frames that could be read.

use std::path::Path;

use crate::packet::LinkType;

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
