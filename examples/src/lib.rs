//! Helpers shared by quay's example programs (`src/bin/`). The programs are the point; this
//! library only keeps their common pieces in one place.

use std::error::Error;

use quay_transport::workers::MAX_WORKERS;

pub mod panel;
pub mod site;

/// The default of the servers' `--workers`: one endpoint per core, as many as this system's
/// worker groups allow.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_WORKERS)
}

/// An error and its chain of sources on one line, for a command-line tool's last words: each
/// source is appended after `: ` unless the message already contains it, and line breaks become
/// spaces.
pub fn one_line(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn sources_joined_on_one_line() {
        let error = Outer(std::io::Error::other("inner\nline"));
        assert_eq!(one_line(&error), "outer: inner line");
    }
}
