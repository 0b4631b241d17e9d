//! Linux platform (in progress).
