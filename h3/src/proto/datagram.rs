//! Not implemented yet (issue 4, in progress).
