//! Listening sockets from `/proc/net/{tcp,tcp6,udp,udp6,unix}`. Parsers are pure and
//! fixture-tested; tying a socket to its owning processes happens in the reader, through one
//! pass over `/proc/PID/fd`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::model::{Bytes, Listener, Protocol, SocketKind};

use super::parse::ascii_num;

/// TCP_LISTEN in the kernel's `tcp_states.h`.
const TCP_LISTEN: u8 = 0x0A;
/// TCP_CLOSE, which an unconnected (bound, "listening") UDP socket reports.
const UDP_UNCONNECTED: u8 = 0x07;
/// `__SO_ACCEPTCON` in a unix socket's flags: `listen()` was called.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Parses `/proc/net/tcp` or `tcp6` (listeners only) or `udp`/`udp6` (bound, unconnected
/// sockets only). Lines that do not parse are skipped: the file is the kernel's, a bad line
/// there means a format we do not know, not a reason to drop the others.
pub fn parse_inet(buf: &[u8], protocol: Protocol, ip_version: u8) -> Vec<Listener> {
    let wanted_state = if protocol == Protocol::Tcp {
        TCP_LISTEN
    } else {
        UDP_UNCONNECTED
    };
    buf.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&[u8]> = line
                .split(|&b| b == b' ')
                .filter(|f| !f.is_empty())
                .collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 {
                return None;
            }
            let state = u8::from_str_radix(std::str::from_utf8(f[3]).ok()?, 16).ok()?;
            if state != wanted_state {
                return None;
            }
            let (addr_hex, port_hex) = split_once(f[1], b':')?;
            let port = u16::from_str_radix(std::str::from_utf8(port_hex).ok()?, 16).ok()?;
            if port == 0 {
                return None;
            }
            let address = match ip_version {
                4 => decode_v4(addr_hex)?.to_string(),
                _ => decode_v6(addr_hex)?.to_string(),
            };
            Some(Listener {
                protocol,
                ip_version: Some(ip_version),
                address: Some(address),
                port: Some(port),
                path: None,
                kind: None,
                inode: ascii_num(f[9])?,
                uid: ascii_num(f[7]),
                owners: Vec::new(),
            })
        })
        .filter(|l| l.inode != 0)
        .collect()
}

fn split_once(b: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == sep)?;
    Some((&b[..i], &b[i + 1..]))
}

/// The kernel prints each 32-bit word of the address with `%08X` in host byte order, so the
/// word's native-endian bytes are the address bytes.
fn hex_word(hex: &[u8]) -> Option<[u8; 4]> {
    Some(
        u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16)
            .ok()?
            .to_ne_bytes(),
    )
}

fn decode_v4(hex: &[u8]) -> Option<Ipv4Addr> {
    if hex.len() != 8 {
        return None;
    }
    hex_word(hex).map(Ipv4Addr::from)
}

fn decode_v6(hex: &[u8]) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in hex.chunks(8).enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&hex_word(chunk)?);
    }
    Some(Ipv6Addr::from(bytes))
}

/// Parses `/proc/net/unix`, keeping stream and seqpacket sockets in the listening state.
pub fn parse_unix(buf: &[u8]) -> Vec<Listener> {
    buf.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode [Path]; the path may hold spaces.
            let mut rest = line;
            let mut fields = Vec::with_capacity(7);
            for _ in 0..7 {
                let start = rest.iter().position(|&b| b != b' ')?;
                rest = &rest[start..];
                let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
                fields.push(&rest[..end]);
                rest = &rest[end..];
            }
            let flags = u32::from_str_radix(std::str::from_utf8(fields[3]).ok()?, 16).ok()?;
            if flags & SO_ACCEPTCON == 0 {
                return None;
            }
            let kind = match fields[4] {
                b"0001" => SocketKind::Stream,
                b"0005" => SocketKind::Seqpacket,
                _ => return None,
            };
            let path = rest.strip_prefix(b" ").unwrap_or(rest);
            Some(Listener {
                protocol: Protocol::Unix,
                ip_version: None,
                address: None,
                port: None,
                path: (!path.is_empty()).then(|| Bytes::from(path)),
                kind: Some(kind),
                inode: ascii_num(fields[6])?,
                uid: None,
                owners: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &[u8] = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 31337 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20001 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 31338 1 0000000000000000 20 4 30 10 -1
   3: garbage
";

    #[test]
    fn tcp4_listeners_only() {
        let ls = parse_inet(TCP, Protocol::Tcp, 4);
        assert_eq!(ls.len(), 2, "{ls:?}");
        assert_eq!(ls[0].address.as_deref(), Some("127.0.0.1"));
        assert_eq!(ls[0].port, Some(8000));
        assert_eq!(ls[0].inode, 31337);
        assert_eq!(ls[0].uid, Some(1000));
        assert_eq!(ls[1].address.as_deref(), Some("0.0.0.0"));
        assert_eq!(ls[1].port, Some(22));
    }

    #[test]
    fn tcp6_addresses() {
        let tcp6 = b"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4445 1 0000000000000000 100 0 0 10 0
";
        let ls = parse_inet(tcp6, Protocol::Tcp, 6);
        assert_eq!(ls[0].address.as_deref(), Some("::1"));
        assert_eq!(ls[0].port, Some(8080));
        assert_eq!(ls[1].address.as_deref(), Some("::"));
        assert_eq!(ls[1].label(), "tcp [::]:80");
    }

    #[test]
    fn udp_bound_only() {
        let udp = b"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0
  101: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 778 2 0000000000000000 0
";
        let ls = parse_inet(udp, Protocol::Udp, 4);
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].port, Some(5353));
    }

    #[test]
    fn unix_listeners_with_odd_paths() {
        let unix = b"Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/dbus/system_bus_socket
0000000000000000: 00000002 00000000 00010000 0005 01 1002 @abstract name
0000000000000000: 00000003 00000000 00000000 0001 03 1003 /run/dbus/system_bus_socket
0000000000000000: 00000002 00000000 00000000 0002 01 1004 /dev/log
0000000000000000: 00000002 00000000 00010000 0001 01 1005
0000000000000000: 0000
";
        let ls = parse_unix(unix);
        let got: Vec<_> = ls
            .iter()
            .map(|l| {
                (
                    l.inode,
                    l.kind,
                    l.path.as_ref().map(|p| p.lossy().into_owned()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    1001,
                    Some(SocketKind::Stream),
                    Some("/run/dbus/system_bus_socket".into())
                ),
                (
                    1002,
                    Some(SocketKind::Seqpacket),
                    Some("@abstract name".into())
                ),
                (1005, Some(SocketKind::Stream), None),
            ]
        );
    }

    #[test]
    fn empty_and_header_only() {
        assert!(parse_inet(b"", Protocol::Tcp, 4).is_empty());
        assert!(parse_unix(b"Num RefCount\n").is_empty());
    }
}
