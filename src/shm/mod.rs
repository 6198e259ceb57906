//! Shared-memory regions of decimated samples: layout, writer and reader.
