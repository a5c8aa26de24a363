//! The process's file descriptor budget. The HTTP server caps connections
//! below `RLIMIT_NOFILE`, leaving room for content files, the database pool
//! and SMTP; a file read that still finds the table full waits and retries
//! rather than losing the file.

use std::time::Duration;

use rustix::io::Errno;

/// The soft `RLIMIT_NOFILE` of this process (u64::MAX when unlimited).
pub fn limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Connections allowed under a descriptor limit of `nofile`: a quarter of the
/// descriptors, and at least 128 (or half of a tiny limit), stay free for
/// content files, the database pool, SMTP connections and the listener.
pub fn connection_ceiling(nofile: u64) -> usize {
    let nofile = nofile.min(4_000_000);
    let reserve = (nofile / 4).max(128.min(nofile / 2));
    (nofile - reserve).max(1) as usize
}

/// Whether an error means the process (EMFILE) or the system (ENFILE) is
/// out of file descriptors.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
}

/// Runs `op`, and again after a short, doubling pause (about 1.3 s in all)
/// while it fails because descriptors ran out: connections closing free
/// them, and giving up would drop a file until the next rescan. Blocks the
/// calling thread while it waits, so call it from blocking code only.
pub fn retry_when_exhausted<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut wait = Duration::from_millis(5);
    loop {
        match op() {
            Err(e) if is_exhaustion(&e) && wait < Duration::from_secs(1) => {
                tracing::warn!("out of file descriptors ({e}); trying again in {wait:?}");
                std::thread::sleep(wait);
                wait *= 2;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_leaves_descriptors_free() {
        assert_eq!(connection_ceiling(1024), 768);
        assert_eq!(connection_ceiling(256), 128);
        assert_eq!(connection_ceiling(64), 32);
        assert_eq!(connection_ceiling(1), 1);
        assert_eq!(connection_ceiling(1 << 20), 786_432);
        assert!(connection_ceiling(u64::MAX) < 4_000_000);
    }

    #[test]
    fn a_read_that_hits_emfile_is_retried_not_dropped() {
        let mut failures = 3;
        let result = retry_when_exhausted(|| {
            if failures > 0 {
                failures -= 1;
                Err(std::io::Error::from_raw_os_error(
                    Errno::MFILE.raw_os_error(),
                ))
            } else {
                Ok("the case study")
            }
        });
        assert_eq!(result.unwrap(), "the case study");
        assert_eq!(failures, 0);

        let mut calls = 0;
        let result: std::io::Result<()> = retry_when_exhausted(|| {
            calls += 1;
            Err(std::io::Error::from_raw_os_error(
                Errno::NFILE.raw_os_error(),
            ))
        });
        assert!(
            is_exhaustion(&result.unwrap_err()),
            "gives up with the error"
        );
        assert!(calls > 1);

        let mut calls = 0;
        let result: std::io::Result<()> = retry_when_exhausted(|| {
            calls += 1;
            Err(std::io::ErrorKind::NotFound.into())
        });
        assert!(result.is_err());
        assert_eq!(calls, 1, "other errors are not retried");
    }
}
