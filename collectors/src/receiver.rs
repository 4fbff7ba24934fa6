//! UDP receivers: the sockets flow export arrives on (IN-7). With
//! [`crate::capture`], the only I/O in this crate.
//!
//! Each [`Receiver`] is one socket bound with `SO_REUSEPORT` (several
//! receivers on one address share the load; the kernel keeps each exporter
//! on one socket, so its template state stays on one thread) and a large
//! receive buffer. The datagrams the kernel dropped because the buffer was
//! full are read from the socket (`SO_MEMINFO`) when asked, not carried on
//! every datagram. Datagrams are read in batches with `recvmmsg(2)` into
//! buffers allocated once, when the receiver is made: no allocation per
//! datagram. Under load, a short batch is followed by a short pause
//! ([`COALESCE`]) so that the next call finds a fuller batch: far fewer
//! wake-ups and system calls per datagram, for at most that much latency.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams read per `recvmmsg` call.
pub const BATCH: usize = 32;
/// Bytes per datagram slot: the largest UDP payload over IPv4 fits.
const SLOT: usize = 65_536;
/// Distance between slots: a slot and 17 cache lines, so the slots' first
/// lines do not all fall in the same cache sets (as 64 KiB strides would).
const STRIDE: usize = SLOT + 17 * 64;
/// The pause after a batch that was neither empty nor full.
pub const COALESCE: Duration = Duration::from_micros(200);

/// Socket options for a receiver.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Requested `SO_RCVBUF` in bytes (the kernel may cap it at `rmem_max`;
    /// as root, `SO_RCVBUFFORCE` lifts the cap).
    pub receive_buffer: usize,
    /// How long one `recv` waits before returning empty (for shutdown checks).
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            receive_buffer: 32 << 20,
            poll: Duration::from_millis(200),
        }
    }
}

/// One received datagram in the batch.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub data: &'a [u8],
    pub source: SocketAddr,
    /// The datagram was larger than its slot and was cut (it is still returned).
    pub truncated: bool,
}

/// A bound UDP socket and its batch buffers.
pub struct Receiver {
    socket: UdpSocket,
    local: SocketAddr,
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    filled: usize,
}

// SAFETY: the raw pointers inside `iovecs` and `msgs` point into the boxes
// this struct owns (heap memory that never moves) and are rebuilt before each
// use; nothing is shared with another thread.
unsafe impl Send for Receiver {}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("local", &self.local)
            .finish()
    }
}

impl Receiver {
    pub fn bind(addr: SocketAddr, opts: Options) -> io::Result<Receiver> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            // An IPv6 wildcard should not also take the IPv4 port.
            socket.set_only_v6(true)?;
        }
        set_receive_buffer(&socket, opts.receive_buffer);
        socket.bind(&addr.into())?;
        socket.set_read_timeout(Some(opts.poll))?;
        let socket: UdpSocket = socket.into();
        let local = socket.local_addr()?;
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Ok(Receiver {
            socket,
            local,
            bufs: vec![0u8; BATCH * STRIDE].into_boxed_slice(),
            addrs: vec![zero_addr; BATCH].into_boxed_slice(),
            iovecs: vec![zero_iov; BATCH].into_boxed_slice(),
            msgs: vec![zero_msg; BATCH].into_boxed_slice(),
            filled: 0,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The receive buffer the kernel granted, in bytes.
    pub fn receive_buffer(&self) -> usize {
        socket2::SockRef::from(&self.socket)
            .recv_buffer_size()
            .unwrap_or(0)
    }

    /// Datagrams the kernel dropped on this socket since it was made (its
    /// `sk_drops`, read with `SO_MEMINFO`); 0 if the kernel will not say.
    pub fn kernel_drops(&self) -> u32 {
        let mut info = [0u32; 16];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: a valid socket fd; `info` and `len` describe a writable
        // buffer the kernel fills up to `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let drops = libc::SK_MEMINFO_DROPS as usize;
        if r == 0 && len as usize >= (drops + 1) * 4 {
            info[drops]
        } else {
            0
        }
    }

    /// Waits up to the poll interval for datagrams and reads up to [`BATCH`];
    /// returns how many (0 when the wait ran out).
    pub fn recv(&mut self) -> io::Result<usize> {
        if self.filled > 0 && self.filled < BATCH {
            std::thread::sleep(COALESCE);
        }
        self.filled = 0;
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i * STRIDE..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // Block for the first datagram (up to SO_RCVTIMEO), then take what is
        // queued without waiting for a full batch.
        // SAFETY: msgs/iovecs/addrs point into buffers owned by self, sized
        // as declared above, and live across the call.
        let n = unsafe {
            libc::recvmmsg(
                std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// Datagram `i` of the last batch.
    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.filled {
            return None;
        }
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(SLOT);
        Some(Received {
            data: &self.bufs[i * STRIDE..i * STRIDE + len],
            source: sockaddr_to_std(&self.addrs[i])?,
            truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }
}

fn set_receive_buffer(socket: &Socket, bytes: usize) {
    // SO_RCVBUFFORCE passes rmem_max for privileged processes (CAP_NET_ADMIN).
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: a valid socket fd and a pointer to a c_int of the right size.
    let forced = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        let _ = socket.set_recv_buffer_size(bytes);
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes());
            Some(SocketAddr::new(ip, u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: ss_family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // An IPv4 exporter reaching an IPv6 socket is the IPv4 address.
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(SocketAddr::new(ip, u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_a_batch_with_sources_and_no_loss() {
        let mut r = Receiver::bind("127.0.0.1:0".parse().unwrap(), Options::default()).unwrap();
        let to = r.local_addr();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            tx.send_to(&[i; 100], to).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            let n = r.recv().unwrap();
            assert!(n > 0, "datagrams went missing");
            for i in 0..n {
                let d = r.get(i).unwrap();
                assert_eq!(d.source, tx.local_addr().unwrap());
                assert!(!d.truncated);
                got.push(d.data.to_vec());
            }
        }
        assert_eq!(got, (0..10u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
        assert_eq!(r.kernel_drops(), 0);
        assert!(r.receive_buffer() > 0);
    }

    #[test]
    fn an_empty_wait_returns_zero() {
        let mut r = Receiver::bind(
            "127.0.0.1:0".parse().unwrap(),
            Options {
                poll: Duration::from_millis(10),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(r.recv().unwrap(), 0);
    }

    #[test]
    fn kernel_drops_are_read_from_the_socket() {
        // A tiny buffer, flooded while nobody reads: the kernel must drop
        // and say so.
        let mut r = Receiver::bind(
            "127.0.0.1:0".parse().unwrap(),
            Options {
                receive_buffer: 4096,
                poll: Duration::from_millis(50),
            },
        )
        .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..2000 {
            let _ = tx.send_to(&[0u8; 1000], r.local_addr());
        }
        tx.send_to(b"last", r.local_addr()).ok();
        let mut received = 0;
        while r.recv().unwrap() > 0 {
            received += r.filled;
        }
        assert!(
            r.kernel_drops() > 0,
            "received {received}, drops not reported"
        );
        assert_eq!(
            received as u32 + r.kernel_drops(),
            2001,
            "every datagram is received or counted"
        );
    }
}
