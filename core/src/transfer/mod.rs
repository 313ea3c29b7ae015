//! The file transfer engine: one sender and one receiver state machine, used
//! for every link that moves files. See docs/transfer.md.

pub mod messages;
pub mod receiver;
pub mod sender;

pub use messages::{TransferError, TransferMsg, BLOCK_BYTES, CHUNK};
pub use receiver::{Receiver, ReceiverOutput};
pub use sender::{Sender, SenderConfig, SenderOutput};

#[cfg(test)]
mod tests;
