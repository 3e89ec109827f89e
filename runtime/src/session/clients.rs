//! Per-client bounds shared by every session of a gateway: connection slots (in total,
//! per client address, per principal) and the publish budget of each principal, which
//! its WebSocket sessions and its gRPC calls draw from together.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::rate::TokenBucket;
use crate::config::Limits;
use crate::protocol::{Code, Status};

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The gateway serves [`Limits::max_connections`].
    Gateway,
    /// This address has [`Limits::max_connections_per_address`].
    Address,
    /// This principal has [`Limits::max_connections_per_principal`].
    Principal,
}

impl Full {
    pub(crate) fn status(self, limits: &Limits) -> Status {
        let msg = match self {
            Full::Gateway => format!("the gateway serves its limit of {} connections", limits.max_connections),
            Full::Address => {
                format!("at most {} connections from one address", limits.max_connections_per_address)
            }
            Full::Principal => {
                format!("at most {} connections per principal", limits.max_connections_per_principal)
            }
        };
        Status::new(Code::ResourceExhausted, msg).with_retry_after(Duration::from_secs(5))
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_addr: HashMap<IpAddr, usize>,
    by_principal: HashMap<String, usize>,
}

/// The clients of one gateway.
pub(crate) struct Clients {
    counts: Mutex<Counts>,
    budgets: Mutex<HashMap<BudgetKey, TokenBucket>>,
    limits: Limits,
}

/// Whose publish budget: a principal's, or an anonymous client address's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum BudgetKey {
    Principal(String),
    Anonymous(Option<IpAddr>),
}

/// A connection's place in the counts; given back when dropped.
pub(crate) struct Slot {
    clients: Arc<Clients>,
    addr: Option<IpAddr>,
    principal: Option<String>,
}

impl Clients {
    pub(crate) fn new(limits: Limits) -> Arc<Clients> {
        Arc::new(Clients { counts: Mutex::default(), budgets: Mutex::default(), limits })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `addr`, or which bound is reached.
    pub(crate) fn connect(self: &Arc<Self>, addr: Option<IpAddr>) -> Result<Slot, Full> {
        let mut c = self.counts();
        if c.total >= self.limits.max_connections {
            return Err(Full::Gateway);
        }
        if let Some(ip) = addr {
            let n = c.by_addr.get(&ip).copied().unwrap_or(0);
            if n >= self.limits.max_connections_per_address {
                return Err(Full::Address);
            }
            c.by_addr.insert(ip, n + 1);
        }
        c.total += 1;
        Ok(Slot { clients: self.clone(), addr, principal: None })
    }

    /// Takes one publish from the budget of `key`, or says how long until there is one.
    pub(crate) fn take_publish(&self, key: BudgetKey) -> Result<(), Duration> {
        let rate = self.limits.max_publishes_per_second_per_principal;
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if !budgets.contains_key(&key) && budgets.len() >= self.limits.max_tracked_clients {
            // Full buckets hold nothing worth remembering: a new bucket is full too.
            budgets.retain(|_, b| !b.is_full());
            if budgets.len() >= self.limits.max_tracked_clients {
                return Err(Duration::from_secs(1));
            }
        }
        budgets.entry(key).or_insert_with(|| TokenBucket::new(rate)).take()
    }
}

impl Slot {
    /// Counts this connection for `principal` too (anonymous principals are not counted).
    pub(crate) fn bind_principal(&mut self, principal: &str) -> Result<(), Full> {
        if principal.is_empty() || self.principal.as_deref() == Some(principal) {
            return Ok(());
        }
        let mut c = self.clients.counts();
        let n = c.by_principal.get(principal).copied().unwrap_or(0);
        if n >= self.clients.limits.max_connections_per_principal {
            return Err(Full::Principal);
        }
        if c.by_principal.len() >= self.clients.limits.max_tracked_clients && n == 0 {
            return Err(Full::Gateway);
        }
        c.by_principal.insert(principal.to_owned(), n + 1);
        if let Some(old) = self.principal.take() {
            release(&mut c.by_principal, &old);
        }
        drop(c);
        self.principal = Some(principal.to_owned());
        Ok(())
    }
}

/// Counts one holder of `key` less, forgetting keys nobody holds.
pub(crate) fn release<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.clients.counts();
        c.total -= 1;
        if let Some(ip) = self.addr {
            release(&mut c.by_addr, &ip);
        }
        if let Some(p) = &self.principal {
            release(&mut c.by_principal, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_total_address_and_principal_and_are_given_back() {
        let limits = Limits::default()
            .with_max_connections(3)
            .with_max_connections_per_address(2)
            .with_max_connections_per_principal(1);
        let clients = Clients::new(limits);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let mut s1 = clients.connect(Some(a)).expect("first");
        let s2 = clients.connect(Some(a)).expect("second");
        assert_eq!(clients.connect(Some(a)).err(), Some(Full::Address));
        let mut s3 = clients.connect(Some(b)).expect("other address");
        assert_eq!(clients.connect(Some(b)).err(), Some(Full::Gateway));
        s1.bind_principal("ada").expect("ada once");
        assert_eq!(s3.bind_principal("ada").err(), Some(Full::Principal));
        s3.bind_principal("").expect("anonymous is not counted");
        drop(s1);
        s3.bind_principal("ada").expect("ada's slot was given back");
        drop((s2, s3));
        assert_eq!(clients.counts().total, 0);
        assert!(clients.counts().by_addr.is_empty() && clients.counts().by_principal.is_empty());
    }

    #[test]
    fn the_publish_budget_is_per_principal() {
        let clients = Clients::new(Limits::default().with_max_publishes_per_second_per_principal(5));
        let ada = || BudgetKey::Principal("ada".into());
        for _ in 0..5 {
            clients.take_publish(ada()).expect("within the burst");
        }
        assert!(clients.take_publish(ada()).is_err());
        assert!(clients.take_publish(BudgetKey::Principal("bob".into())).is_ok());
        assert!(clients.take_publish(BudgetKey::Anonymous(None)).is_ok());
    }
}
