//! Segment loading (filled in below).
