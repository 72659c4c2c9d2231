//! Netlink framing, written once for the two netlink readers (sock_diag for sockets, the
//! proc connector for process events): the socket, the `nlmsghdr` in front of every
//! request, the walk over the messages of a reply datagram, and the send to the kernel.
//! Plain bytes in native byte order (netlink's), so there is no `unsafe` here.

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

use super::ne_bytes::{u16_at, u32_at};

// <linux/netlink.h>
/// The size of `struct nlmsghdr`: len (u32), type (u16), flags (u16), seq (u32), pid (u32).
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// NLM_F_ROOT | NLM_F_MATCH.
pub const NLM_F_DUMP: u16 = 0x100 | 0x200;

/// A datagram netlink socket of `protocol`, close-on-exec, non-blocking when asked.
pub fn socket(protocol: rustix::net::Protocol, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        flags,
        Some(protocol),
    )?)
}

/// Sends one message to the kernel (netlink port 0); a short send is an error.
pub fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    let sent = rustix::net::sendto(fd, msg, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))?;
    if sent != msg.len() {
        return Err(io::Error::other("short send of a netlink message"));
    }
    Ok(())
}

/// A netlink message: `nlmsghdr` with `kind`, `flags` and `seq` (the sender's port left 0
/// for the kernel to fill in), then `body`.
pub fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
    msg.extend_from_slice(body);
    msg
}

/// A netlink message of a received datagram: its header fields and payload.
#[derive(Debug)]
pub struct NlMsg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The netlink messages in one datagram; a malformed header (shorter than a header, or
/// longer than what is left) ends the iteration with an `InvalidData` error.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = io::Result<NlMsg<'_>>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let parsed = (|| {
            let len = u32_at(buf, 0)? as usize;
            if len < NLMSG_HDRLEN || len > buf.len() {
                return None;
            }
            let msg = NlMsg {
                kind: u16_at(buf, 4)?,
                flags: u16_at(buf, 6)?,
                seq: u32_at(buf, 8)?,
                payload: buf.get(NLMSG_HDRLEN..len)?,
            };
            Some((msg, align4(len).min(buf.len())))
        })();
        match parsed {
            Some((msg, next)) => {
                buf = &buf[next..];
                Some(Ok(msg))
            }
            None => {
                buf = &[];
                Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed netlink message header",
                )))
            }
        }
    })
}

/// Netlink messages and attributes are padded to 4 bytes.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_and_garbage_ends_the_walk() {
        let mut d = message(20, NLM_F_REQUEST | NLM_F_DUMP, 7, b"abc");
        assert_eq!(d.len(), NLMSG_HDRLEN + 3);
        assert_eq!(u32_at(&d, 0), Some(19));
        d.resize(align4(d.len()), 0);
        d.extend(message(NLMSG_DONE, 0, 7, &0i32.to_ne_bytes()));
        let msgs: Vec<NlMsg> = messages(&d).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].kind, msgs[0].seq, msgs[0].payload),
            (20, 7, &b"abc"[..])
        );
        assert_eq!(msgs[0].flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(msgs[1].kind, NLMSG_DONE);
        let mut bad = message(20, 0, 1, b"abcd");
        bad[0] = 200;
        let all: Vec<io::Result<NlMsg>> = messages(&bad).collect();
        assert_eq!(all.len(), 1);
        assert!(all[0].is_err());
        assert_eq!(messages(&bad[..3]).count(), 1, "a cut header is one error");
    }
}
