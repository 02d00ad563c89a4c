//! WebTransport over HTTP/3 for quay: not yet implemented; see the README's feature table.
