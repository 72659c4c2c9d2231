//! The platform seam: reads the OS into the plain types of [`crate::model`] and carries
//! out signals. One module per OS, chosen at compile time; consumers see the same
//! functions whatever the target.

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod os;

#[cfg(not(target_os = "linux"))]
#[path = "unsupported.rs"]
mod os;

pub use os::*;
