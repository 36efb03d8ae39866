//! The MMDS hook of virtio-net: with an MMDS stack ([`Net::set_mmds`]),
//! the frames the driver transmits to the MMDS address (ARP for it, IPv4
//! to it) go to the stack instead of the backend, and the stack's answers
//! are put in the receive queue with a plain virtio-net header (no
//! offload work), between the backend's frames.
//!
//! [`Net::set_mmds`]: crate::net::Net::set_mmds

use crate::tap::VNET_HDR_LEN;

/// The stack and its frame on the way to the guest.
pub(crate) struct MmdsHook {
    pub(crate) stack: mmds::Stack,
    /// The frame being received (virtio header included).
    pub(crate) frame: Vec<u8>,
    /// A frame in `frame` that waits for receive buffers (its length).
    pub(crate) pending: Option<usize>,
}

impl MmdsHook {
    pub(crate) fn new(stack: mmds::Stack) -> MmdsHook {
        MmdsHook {
            stack,
            frame: vec![0; VNET_HDR_LEN + mmds::stack::MAX_FRAME],
            pending: None,
        }
    }

    /// Takes a transmitted frame (header included) when it is for the
    /// MMDS; false when it goes to the backend.
    pub(crate) fn take_tx(&mut self, frame: &[u8]) -> bool {
        let Some(ethernet) = frame.get(VNET_HDR_LEN..) else {
            return false;
        };
        if !self.stack.is_for_mmds(ethernet) {
            return false;
        }
        self.stack.handle_guest_frame(ethernet);
        true
    }

    /// The next frame for the guest in `frame`: the waiting one, or the
    /// stack's next; its length with the header.
    pub(crate) fn next_rx(&mut self) -> Option<usize> {
        if let Some(len) = self.pending.take() {
            return Some(len);
        }
        let len = self
            .stack
            .next_frame_for_guest(&mut self.frame[VNET_HDR_LEN..])?;
        self.frame[..VNET_HDR_LEN].fill(0);
        Some(VNET_HDR_LEN + len)
    }
}
