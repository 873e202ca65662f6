//! PC platform devices (being written).
