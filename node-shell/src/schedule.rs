//! Who may propose which batch, and when a fallback producer may take over.
//!
//! Every input comes from data each node reads itself: L2 block numbers, the members and
//! stakes committed with the current key generation (derived from L1), and L1 heights.
//! Nothing depends on a node's wall clock, so every honest follower reaches the same
//! answer for the same L1 height.
//!
//! - **Epochs** are fixed spans of L2 blocks: epoch `e` covers
//!   `[genesis + e * len, genesis + (e + 1) * len - 1]`. A batch belongs to the epoch of
//!   its first block and may not cross into the next epoch.
//! - **Producer order** of an epoch: members drawn one after another without replacement,
//!   each draw with probability proportional to stake, from
//!   `sha256("node-shell/producer-order/v1" || seed || epoch || level)`. Level 0 is the
//!   epoch's producer; level 1 the first fallback, and so on.
//! - **Failover**: the stall clock starts at the L1 block of the last event that moved
//!   the pool forward (the last appended batch, or the MPC address registration if that
//!   is later). At L1 height `h`, the level is `(h - start) / stall_window` modulo the
//!   number of members: after one full window without an appended batch the first
//!   fallback may propose, after two the second, and so on; after the last member's
//!   window the turn goes round the order again, so one member that is down cannot
//!   hold the pool up for good, whichever level it holds. Only the producer of the
//!   current level is accepted, so a stalled producer that comes back late is refused by
//!   the followers (and the inbox refuses any range appended twice).
//!
//! ```
//! use node_shell::schedule::Schedule;
//! use transport::NodeId;
//!
//! let id = |i: u8| NodeId::from_bytes([i; 32]);
//! let members = vec![(id(1), 10u128), (id(2), 20), (id(3), 30), (id(4), 40)];
//! let s = Schedule { seed: [7; 32], genesis_l2_block: 100, epoch_length: 50, stall_window: 10 };
//! assert_eq!(s.epoch_of(100), Some(0));
//! assert_eq!(s.epoch_of(149), Some(0));
//! assert_eq!(s.epoch_of(150), Some(1));
//! let order = s.order(&members, 3);
//! assert_eq!(order.len(), 4); // every member once
//! // No batch for a window of 10 L1 blocks since block 500: the first fallback's turn.
//! assert_eq!(s.level(500, 509, members.len()), 0);
//! assert_eq!(s.level(500, 510, members.len()), 1);
//! assert_eq!(s.producer(&members, 3, 500, 510), Some(order[1]));
//! ```

use sha2::{Digest, Sha256};
use transport::NodeId;

/// The producer schedule's parameters; the same on every node (configuration plus L1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Seed of the draws (32 bytes from configuration; the same on every node).
    pub seed: [u8; 32],
    /// The first L2 block the inbox accepts (its `genesisBlock`).
    pub genesis_l2_block: u64,
    /// L2 blocks per epoch (at least 1).
    pub epoch_length: u64,
    /// L1 blocks without an appended batch after which the next fallback may propose
    /// (at least 1).
    pub stall_window: u64,
}

impl Schedule {
    /// The epoch of L2 block `block`; `None` before genesis.
    pub fn epoch_of(&self, block: u64) -> Option<u64> {
        block
            .checked_sub(self.genesis_l2_block)
            .map(|d| d / self.epoch_length.max(1))
    }

    /// The last L2 block of `epoch`.
    pub fn epoch_end(&self, epoch: u64) -> u64 {
        let len = self.epoch_length.max(1);
        self.genesis_l2_block
            .saturating_add(epoch.saturating_add(1).saturating_mul(len))
            .saturating_sub(1)
    }

    /// The producer order of `epoch` over `members` (node, stake): a stake-weighted draw
    /// without replacement, the same on every node. Members with zero stake never produce
    /// (the staking contract does not allow them anyway). The input order does not
    /// matter: members are sorted by node id first.
    pub fn order(&self, members: &[(NodeId, u128)], epoch: u64) -> Vec<NodeId> {
        let mut left: Vec<(NodeId, u128)> =
            members.iter().copied().filter(|(_, s)| *s > 0).collect();
        left.sort_by_key(|(n, _)| *n);
        left.dedup_by_key(|(n, _)| *n);
        let mut order = Vec::with_capacity(left.len());
        let mut level: u64 = 0;
        loop {
            let total: u128 = left
                .iter()
                .map(|(_, s)| *s)
                .fold(0u128, u128::saturating_add);
            if total == 0 {
                break;
            }
            let mut h = Sha256::new();
            h.update(b"node-shell/producer-order/v1");
            h.update(self.seed);
            h.update(epoch.to_be_bytes());
            h.update(level.to_be_bytes());
            let digest: [u8; 32] = h.finalize().into();
            let mut wide = [0u8; 16];
            wide.copy_from_slice(&digest[..16]);
            // 128 bits of hash against the total stake: the bias is negligible for any
            // total below 2^100 (stakes in wei are below 2^90 for 10^9 ETH).
            let mut ticket = u128::from_be_bytes(wide) % total;
            let mut pick = 0;
            for (i, (_, stake)) in left.iter().enumerate() {
                if ticket < *stake {
                    pick = i;
                    break;
                }
                ticket -= *stake;
            }
            order.push(left.remove(pick).0);
            level += 1;
        }
        order
    }

    /// The failover level at L1 height `now` when the stall clock started at L1 block
    /// `since` (see the module docs), for a pool of `members` members: one more per
    /// stall window, round the order again after the last member.
    pub fn level(&self, since: u64, now: u64, members: usize) -> usize {
        let waited = now.saturating_sub(since) / self.stall_window.max(1);
        let members = u64::try_from(members.max(1)).unwrap_or(u64::MAX);
        // `waited % members < members`, which came from a usize.
        (waited % members) as usize
    }

    /// The member allowed to propose `epoch`'s next batch at L1 height `now`, the stall
    /// clock having started at `since`; `None` for a pool without stake.
    pub fn producer(
        &self,
        members: &[(NodeId, u128)],
        epoch: u64,
        since: u64,
        now: u64,
    ) -> Option<NodeId> {
        let order = self.order(members, epoch);
        let level = self.level(since, now, order.len());
        order.get(level).copied()
    }

    /// The members likely to propose the next batches, given that the next batch
    /// belongs to `epoch` and the failover level is `level` now: the producer of this
    /// level, the member of the next level (who takes over after one more stall window)
    /// and the producer of the next epoch. Deduplicated, in that order; empty for a pool
    /// without stake.
    ///
    /// The node keeps presignatures ready only when it is one of these (see
    /// [`crate::coordinator`]): a presignature can be spent only by the member that made
    /// it, in a request it proposes, so the others' would sit unused while their presign
    /// runs take the pool's CPU (on 2 cores at 7-of-10, eleven members refilling at once
    /// starved their own network tasks).
    pub fn likely_producers(
        &self,
        members: &[(NodeId, u128)],
        epoch: u64,
        level: usize,
    ) -> Vec<NodeId> {
        let order = self.order(members, epoch);
        if order.is_empty() {
            return Vec::new();
        }
        let mut likely = vec![order[level % order.len()]];
        for next in [
            order[(level + 1) % order.len()],
            self.order(members, epoch.saturating_add(1))[0],
        ] {
            if !likely.contains(&next) {
                likely.push(next);
            }
        }
        likely
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(i: u8) -> NodeId {
        NodeId::from_bytes([i; 32])
    }

    fn schedule() -> Schedule {
        Schedule {
            seed: [9; 32],
            genesis_l2_block: 1_000,
            epoch_length: 100,
            stall_window: 5,
        }
    }

    #[test]
    fn every_member_appears_once_in_every_epochs_order_whatever_the_input_order() {
        let members: Vec<_> = (1..=7u8).map(|i| (id(i), u128::from(i) * 1_000)).collect();
        let mut reversed = members.clone();
        reversed.reverse();
        for epoch in 0..50 {
            let order = schedule().order(&members, epoch);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (1..=7u8).map(id).collect::<Vec<_>>());
            assert_eq!(order, schedule().order(&reversed, epoch));
        }
    }

    #[test]
    fn producers_are_drawn_in_proportion_to_stake() {
        // 1 : 3 stake; over 4000 epochs the heavier member produces about 3/4 of them.
        let members = vec![(id(1), 1_000u128), (id(2), 3_000)];
        let mut count = BTreeMap::new();
        for epoch in 0..4_000 {
            *count
                .entry(schedule().producer(&members, epoch, 0, 0).unwrap())
                .or_insert(0u32) += 1;
        }
        let heavy = f64::from(count[&id(2)]) / 4_000.0;
        assert!((0.72..0.78).contains(&heavy), "share {heavy}");
    }

    #[test]
    fn the_fallback_level_grows_one_per_stall_window_and_goes_round_the_order() {
        let s = schedule();
        assert_eq!(s.level(100, 100, 4), 0);
        assert_eq!(s.level(100, 104, 4), 0);
        assert_eq!(s.level(100, 105, 4), 1);
        assert_eq!(s.level(100, 114, 4), 2);
        assert_eq!(s.level(100, 119, 4), 3);
        // After the last member's window, the epoch's producer's turn again: a member
        // that is down never holds the turn for good.
        assert_eq!(s.level(100, 120, 4), 0);
        assert_eq!(s.level(100, 125, 4), 1);
        assert_eq!(s.level(100, 100 + 5 * 4 * 1_000 + 15, 4), 3);
        // Every member gets a turn in every round, wherever the view jumps in.
        for start in 0..40u64 {
            let levels: std::collections::BTreeSet<usize> = (0..4)
                .map(|w| s.level(100, 100 + start * 5 + w * 5, 4))
                .collect();
            assert_eq!(levels.len(), 4);
        }
        // A height before the clock start (a stale view) is level 0, never a wrap.
        assert_eq!(s.level(100, 50, 4), 0);
        // Degenerate pools.
        assert_eq!(s.level(100, 1_000, 1), 0);
        assert_eq!(s.level(100, 1_000, 0), 0);
        assert_eq!(s.level(0, u64::MAX, 7), (u64::MAX / 5 % 7) as usize);
    }

    #[test]
    fn epochs_are_spans_of_l2_blocks_from_genesis() {
        let s = schedule();
        assert_eq!(s.epoch_of(999), None);
        assert_eq!(s.epoch_of(1_000), Some(0));
        assert_eq!(s.epoch_of(1_099), Some(0));
        assert_eq!(s.epoch_of(1_100), Some(1));
        assert_eq!(s.epoch_end(0), 1_099);
        assert_eq!(s.epoch_end(3), 1_399);
    }

    #[test]
    fn the_likely_producers_are_this_level_the_next_level_and_the_next_epochs_producer() {
        let s = schedule();
        let members: Vec<_> = (1..=7u8).map(|i| (id(i), 1_000u128)).collect();
        for epoch in 0..30 {
            let order = s.order(&members, epoch);
            let next_epoch = s.order(&members, epoch + 1)[0];
            for level in 0..7 {
                let likely = s.likely_producers(&members, epoch, level);
                assert_eq!(likely[0], order[level]);
                assert_eq!(likely[1], order[(level + 1) % 7]);
                // The next epoch's producer, unless it is one of the two already.
                assert!(likely.contains(&next_epoch));
                // No one twice, and no one else: at most 3 of the 7 refill presignatures.
                let expected = if next_epoch == likely[0] || next_epoch == likely[1] {
                    2
                } else {
                    3
                };
                assert_eq!(likely.len(), expected, "{likely:?}");
            }
        }
        // A one-member pool: that member, once; no stake: nobody.
        assert_eq!(s.likely_producers(&[(id(1), 5)], 3, 0), vec![id(1)]);
        assert!(s.likely_producers(&[(id(1), 0)], 3, 0).is_empty());
    }

    #[test]
    fn a_pool_without_stake_has_no_producer() {
        assert_eq!(schedule().producer(&[(id(1), 0)], 0, 0, 0), None);
        let order = schedule().order(&[(id(1), 0), (id(2), 5)], 0);
        assert_eq!(order, vec![id(2)]);
        assert_eq!(schedule().producer(&[], 0, 0, 0), None);
    }
}
