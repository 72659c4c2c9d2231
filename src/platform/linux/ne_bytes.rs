//! Native-endian integers at an offset in a netlink message, for the two netlink readers
//! (sock_diag, the proc connector). `None` when the message is too short: a short or
//! garbled message is skipped, never read past its end.

pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

pub fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_none() {
        let b = 7u32.to_ne_bytes();
        assert_eq!(u32_at(&b, 0), Some(7));
        assert_eq!(u32_at(&b, 1), None);
        assert_eq!(u64_at(&b, 0), None);
        assert_eq!(u16_at(&b, 3), None);
        assert_eq!(i32_at(&[], 0), None);
    }
}
