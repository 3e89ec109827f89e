//! One peer address's share of a bounded pool (handshakes in progress, admin connections):
//! how many places each address holds, given back when its [`Share`] is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::session::clients::release;

/// Places held per address, at most `max` each.
#[derive(Debug)]
pub(crate) struct Shares {
    by_addr: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One place of one address.
#[derive(Debug)]
pub(crate) struct Share {
    shares: Arc<Shares>,
    ip: IpAddr,
}

impl Shares {
    pub(crate) fn new(max: usize) -> Arc<Shares> {
        Arc::new(Shares { by_addr: Mutex::default(), max })
    }

    /// A place for `ip`, unless it holds `max` already.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Share> {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_addr.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Share { shares: self.clone(), ip })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        release(&mut self.shares.by_addr.lock().unwrap_or_else(|p| p.into_inner()), &self.ip);
    }
}
