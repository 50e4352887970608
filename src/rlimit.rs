//! The open-file limit: the server and the benches hold one file per connection.

/// Raises the open-file limit to its hard maximum (connections are files).
pub fn raise_nofile() -> u64 {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            if lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            return lim.rlim_cur as u64;
        }
    }
    0
}
