//! DirectorySync resource types.
