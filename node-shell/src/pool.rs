//! Sequencer pool rules: pure logic, no I/O.
//!
//! A pool is an ordered list of members with stakes. Its order is the committee order of
//! the shared key (joiners are appended, leavers removed), so every node applying the same
//! changes computes the same committee. Joining requires being on the admin whitelist and
//! a stake within `[min_stake, max_stake]`; the pool size stays within
//! `[min_members, max_members]`. The signing threshold is `floor(2n/3) + 1`: strictly
//! more than two thirds of the pool. Each epoch's block producer is drawn by stake from
//! `sha256(seed || epoch)`.
//!
//! # Pool size and fault tolerance
//!
//! A pool of `n` members signs with `t = floor(2n/3) + 1` of them, so it keeps working
//! (signing and resharing) while at most `n - t` members are lost:
//!
//! | n | t | members that may be lost |
//! | --- | --- | --- |
//! | 3 | 3 | **0** |
//! | 4 | 3 | 1 |
//! | 5, 6 | 4, 5 | 1 |
//! | 7 | 5 | 2 |
//! | 10 | 7 | 3 |
//!
//! At `n = 3` the rule gives 3-of-3: one lost member makes the key unusable and it can no
//! longer be reshared. The minimum pool size is therefore [`DEFAULT_MIN_MEMBERS`] = 4
//! unless `pool.min_members` says otherwise (a smaller value is accepted, and is a
//! deliberate choice of no fault tolerance).
//!
//! A pool that loses more than `n - t` members (keystores destroyed, operators gone for
//! good) can neither sign nor reshare: fewer than `t` shares remain, and the key cannot
//! be rebuilt from them. The way out is a **new keygen**, with a **new public key and a
//! new Ethereum address**. Nodes refuse a keygen while L1 has an MPC address registered
//! (see [`crate::coordinator`]), so today that means a new deployment of the L1
//! contracts, stakes locked there, and every node restarted with the new `[l1]` section
//! and a fresh `node.data_dir`; the rollup must then accept batches from the new inbox.
//! The old shares are useless by then; delete them.
//!
//! # Membership from L1
//!
//! A node does not apply [`Change`]s of its own: the pool is the set of sequencers with
//! stake locked on L1, read at a confirmed height under [`PoolRules::l1`] (no whitelist
//! or stake bounds of its own: the contract enforces them), stakes in gwei
//! ([`stake_from_wei`]), members sorted by node id. [`Pool::apply`] remains the pure
//! rule set for embedders that keep membership elsewhere.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transport::NodeId;
use tss_core::Committee;

use crate::error::{Error, Result};

/// Default minimum pool size (`pool.min_members`): the smallest `n` where
/// `floor(2n/3) + 1` signers still leave room to lose a member (3-of-4). See the
/// [module docs](self) for what smaller pools risk.
pub const DEFAULT_MIN_MEMBERS: usize = 4;

/// Default maximum pool size (`pool.max_members`).
pub const DEFAULT_MAX_MEMBERS: usize = 100;

/// The smallest number of signers strictly greater than two thirds of `n`:
/// `floor(2n/3) + 1`.
pub fn threshold_for(n: usize) -> usize {
    2 * n / 3 + 1
}

/// One pool member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The sequencer's node id.
    pub node: NodeId,
    /// Its stake.
    pub stake: u64,
}

/// The rules a pool enforces on membership changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRules {
    /// Nodes the admin allows to be members; `None` when membership is gated elsewhere
    /// (a node following L1: the `SequencerStaking` contract enforces its whitelist and
    /// stake bounds, see [`PoolRules::l1`]).
    pub whitelist: Option<BTreeSet<NodeId>>,
    /// Minimum stake of a member.
    pub min_stake: u64,
    /// Maximum stake of a member.
    pub max_stake: u64,
    /// Minimum pool size (at least 2: a threshold key needs two parties). Default
    /// [`DEFAULT_MIN_MEMBERS`] = 4: at 3 members the threshold is 3-of-3 and the loss of
    /// any one member makes the key unusable and un-resharable.
    pub min_members: usize,
    /// Maximum pool size.
    pub max_members: usize,
}

impl PoolRules {
    /// Rules with the default size bounds ([`DEFAULT_MIN_MEMBERS`],
    /// [`DEFAULT_MAX_MEMBERS`]), as a config file that does not set them gets.
    pub fn with_default_sizes(whitelist: BTreeSet<NodeId>, min_stake: u64, max_stake: u64) -> Self {
        Self {
            whitelist: Some(whitelist),
            min_stake,
            max_stake,
            min_members: DEFAULT_MIN_MEMBERS,
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }

    /// The rules of a pool read from L1: only the size bounds are the node's; the
    /// whitelist and the stake bounds are the staking contract's (every stake it
    /// accepted is accepted here, `1..=u64::MAX` in [`stake_from_wei`] units).
    pub fn l1(min_members: usize, max_members: usize) -> Self {
        Self {
            whitelist: None,
            min_stake: 1,
            max_stake: u64::MAX,
            min_members,
            max_members,
        }
    }
}

/// One gwei in wei: the unit of pool stakes read from L1.
pub const WEI_PER_STAKE_UNIT: u64 = 1_000_000_000;

/// An L1 stake (wei) in the pool's stake unit, **gwei**: `wei / 10^9` rounded down, at
/// least 1 (the contract's `minStake` is positive, so every locked sequencer weighs
/// something) and at most `u64::MAX` (18.4 billion ETH). Every node computes the same
/// value, so the stake-weighted producer schedule is the same everywhere.
pub fn stake_from_wei(wei: alloy::primitives::U256) -> u64 {
    let units = wei / alloy::primitives::U256::from(WEI_PER_STAKE_UNIT);
    u64::try_from(units).unwrap_or(u64::MAX).max(1)
}

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// `node` joins with `stake`.
    Join {
        /// The joiner.
        node: NodeId,
        /// Its stake.
        stake: u64,
    },
    /// `node` leaves.
    Exit {
        /// The leaver.
        node: NodeId,
    },
}

/// The pool: rules, members in committee order, and a version bumped on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    rules: PoolRules,
    members: Vec<Member>,
    version: u64,
}

impl Pool {
    /// A pool with `members` (the genesis set, or a restored snapshot at `version`). Every
    /// member must satisfy the rules.
    pub fn new(rules: PoolRules, members: Vec<Member>, version: u64) -> Result<Self> {
        if rules.min_members < 2 {
            return Err(Error::ConfigInvalid {
                field: "pool.min_members".into(),
                reason: "must be at least 2".into(),
            });
        }
        if rules.max_members < rules.min_members {
            return Err(Error::ConfigInvalid {
                field: "pool.max_members".into(),
                reason: "must be at least pool.min_members".into(),
            });
        }
        if rules.min_stake == 0 || rules.max_stake < rules.min_stake {
            return Err(Error::ConfigInvalid {
                field: "pool.min_stake".into(),
                reason: "need 0 < min_stake <= max_stake".into(),
            });
        }
        let pool = Self {
            rules,
            members: Vec::new(),
            version,
        };
        let mut seen = BTreeSet::new();
        for m in &members {
            if !seen.insert(m.node) {
                return Err(Error::AlreadyMember(m.node));
            }
            pool.check_candidate(m.node, m.stake)?;
        }
        if members.len() < pool.rules.min_members {
            return Err(Error::PoolTooSmall {
                min: pool.rules.min_members,
            });
        }
        if members.len() > pool.rules.max_members {
            return Err(Error::PoolFull {
                max: pool.rules.max_members,
            });
        }
        Ok(Self { members, ..pool })
    }

    fn check_candidate(&self, node: NodeId, stake: u64) -> Result<()> {
        if self
            .rules
            .whitelist
            .as_ref()
            .is_some_and(|w| !w.contains(&node))
        {
            return Err(Error::NotWhitelisted(node));
        }
        if stake < self.rules.min_stake {
            return Err(Error::StakeTooLow {
                stake,
                min: self.rules.min_stake,
            });
        }
        if stake > self.rules.max_stake {
            return Err(Error::StakeTooHigh {
                stake,
                max: self.rules.max_stake,
            });
        }
        Ok(())
    }

    /// The rules.
    pub fn rules(&self) -> &PoolRules {
        &self.rules
    }
    /// Members in committee order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    /// Member node ids in committee order.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.node).collect()
    }
    /// Version: 0 at genesis, +1 per applied change.
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Whether `node` is a member.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.members.iter().any(|m| &m.node == node)
    }
    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }
    /// Whether the pool has no members (never true for a valid pool).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    /// Signers needed: `floor(2n/3) + 1`.
    pub fn threshold(&self) -> usize {
        threshold_for(self.members.len())
    }
    /// Sum of all stakes.
    pub fn total_stake(&self) -> u128 {
        self.members.iter().map(|m| u128::from(m.stake)).sum()
    }

    /// The committee holding the pool's key (members in order, threshold > 2/3).
    pub fn committee(&self) -> Result<Committee> {
        Ok(Committee::two_thirds(self.member_ids())?)
    }

    /// Checks that `node` may join with `stake`.
    pub fn validate_join(&self, node: NodeId, stake: u64) -> Result<()> {
        if self.is_member(&node) {
            return Err(Error::AlreadyMember(node));
        }
        self.check_candidate(node, stake)?;
        if self.members.len() >= self.rules.max_members {
            return Err(Error::PoolFull {
                max: self.rules.max_members,
            });
        }
        Ok(())
    }

    /// Checks that `node` may leave.
    pub fn validate_exit(&self, node: NodeId) -> Result<()> {
        if !self.is_member(&node) {
            return Err(Error::NotMember(node));
        }
        if self.members.len() <= self.rules.min_members {
            return Err(Error::PoolTooSmall {
                min: self.rules.min_members,
            });
        }
        Ok(())
    }

    /// Checks a change without applying it.
    pub fn validate(&self, change: &Change) -> Result<()> {
        match change {
            Change::Join { node, stake } => self.validate_join(*node, *stake),
            Change::Exit { node } => self.validate_exit(*node),
        }
    }

    /// The pool after `change` (validated), with the version bumped.
    pub fn apply(&self, change: &Change) -> Result<Pool> {
        self.validate(change)?;
        let mut next = self.clone();
        match change {
            Change::Join { node, stake } => next.members.push(Member {
                node: *node,
                stake: *stake,
            }),
            Change::Exit { node } => next.members.retain(|m| &m.node != node),
        }
        next.version += 1;
        Ok(next)
    }

    /// The same members at another version with other rules (for a node adopting a
    /// snapshot it was sent).
    pub fn with_members(&self, members: Vec<Member>, version: u64) -> Result<Pool> {
        Pool::new(self.rules.clone(), members, version)
    }

    /// The block producer of `epoch`: a member drawn with probability proportional to its
    /// stake, from `sha256("node-shell/producer/v1" || seed || epoch)` reduced modulo the
    /// total stake. Deterministic: every node computes the same producer.
    pub fn block_producer(&self, seed: &[u8; 32], epoch: u64) -> Option<NodeId> {
        let total = self.total_stake();
        if total == 0 {
            return None;
        }
        let mut h = Sha256::new();
        h.update(b"node-shell/producer/v1");
        h.update(seed);
        h.update(epoch.to_be_bytes());
        let digest: [u8; 32] = h.finalize().into();
        // 128 bits of hash against a total stake of at most ~2^70: bias is negligible.
        let mut wide = [0u8; 16];
        wide.copy_from_slice(&digest[..16]);
        let mut ticket = u128::from_be_bytes(wide) % total;
        for m in &self.members {
            let stake = u128::from(m.stake);
            if ticket < stake {
                return Some(m.node);
            }
            ticket -= stake;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: u8) -> NodeId {
        NodeId::from_bytes([k; 32])
    }

    #[test]
    fn members_and_changes_carry_hex_node_ids_in_json_and_read_the_legacy_form() {
        let member = Member {
            node: id(7),
            stake: 500,
        };
        let json = serde_json::to_value(&member).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "07".repeat(32), "stake": 500})
        );
        assert_eq!(serde_json::from_value::<Member>(json).unwrap(), member);
        // pool-state.json as written before node ids were hex: arrays of 32 numbers.
        let legacy = format!(r#"{{"node": {:?}, "stake": 500}}"#, [7u8; 32]);
        assert_eq!(serde_json::from_str::<Member>(&legacy).unwrap(), member);
        let change = Change::Exit { node: id(9) };
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"Exit":{{"node":"{}"}}}}"#, "09".repeat(32))
        );
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change);
    }

    fn rules(whitelist: &[u8]) -> PoolRules {
        PoolRules {
            whitelist: Some(whitelist.iter().map(|k| id(*k)).collect()),
            min_stake: 100,
            max_stake: 10_000,
            min_members: DEFAULT_MIN_MEMBERS,
            max_members: 6,
        }
    }

    fn pool(stakes: &[(u8, u64)]) -> Pool {
        let members = stakes
            .iter()
            .map(|(k, s)| Member {
                node: id(*k),
                stake: *s,
            })
            .collect();
        Pool::new(rules(&[1, 2, 3, 4, 5, 6, 7]), members, 0).unwrap()
    }

    #[test]
    fn threshold_is_strictly_more_than_two_thirds() {
        for n in 2..=100usize {
            let t = threshold_for(n);
            assert!(3 * t > 2 * n, "n={n} t={t} is not > 2/3");
            assert!(3 * (t - 1) <= 2 * n, "n={n} t={t} is not the smallest");
        }
        assert_eq!(threshold_for(3), 3);
        assert_eq!(threshold_for(4), 3);
        assert_eq!(threshold_for(5), 4);
        assert_eq!(threshold_for(6), 5);
    }

    #[test]
    fn default_rules_refuse_a_pool_of_three() {
        let whitelist: BTreeSet<NodeId> = (1..=4).map(id).collect();
        let members = |k: u8| -> Vec<Member> {
            (1..=k)
                .map(|i| Member {
                    node: id(i),
                    stake: 100,
                })
                .collect()
        };
        let rules = PoolRules::with_default_sizes(whitelist, 100, 10_000);
        assert_eq!(rules.min_members, 4);
        // 3 members would sign 3-of-3: no member may be lost. Refused at genesis ...
        assert!(matches!(
            Pool::new(rules.clone(), members(3), 0),
            Err(Error::PoolTooSmall { min: 4 })
        ));
        // ... and by an exit from a pool of 4 (3-of-4, one member may be lost).
        let four = Pool::new(rules.clone(), members(4), 0).unwrap();
        assert_eq!(four.threshold(), 3);
        assert!(matches!(
            four.validate_exit(id(4)),
            Err(Error::PoolTooSmall { min: 4 })
        ));
        // A pool of three is still possible, but only as an explicit choice.
        let three = Pool::new(
            PoolRules {
                min_members: 3,
                ..rules
            },
            members(3),
            0,
        )
        .unwrap();
        assert_eq!(three.threshold(), three.len());
    }

    #[test]
    fn join_requires_whitelist_stake_bounds_and_room() {
        let p = pool(&[(1, 100), (2, 200), (3, 300), (4, 400)]);
        assert!(matches!(p.validate_join(id(9), 500), Err(Error::NotWhitelisted(n)) if n == id(9)));
        assert!(matches!(
            p.validate_join(id(5), 99),
            Err(Error::StakeTooLow {
                stake: 99,
                min: 100
            })
        ));
        assert!(matches!(
            p.validate_join(id(5), 10_001),
            Err(Error::StakeTooHigh {
                stake: 10_001,
                max: 10_000
            })
        ));
        assert!(matches!(
            p.validate_join(id(2), 500),
            Err(Error::AlreadyMember(_))
        ));
        p.validate_join(id(5), 100).unwrap();
        p.validate_join(id(5), 10_000).unwrap();
        let full = pool(&[(1, 100), (2, 100), (3, 100), (4, 100), (5, 100), (6, 100)]);
        assert!(matches!(
            full.validate_join(id(7), 100),
            Err(Error::PoolFull { max: 6 })
        ));
    }

    #[test]
    fn exit_requires_membership_and_minimum_size() {
        let p = pool(&[(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)]);
        assert!(matches!(p.validate_exit(id(6)), Err(Error::NotMember(_))));
        let smaller = p.apply(&Change::Exit { node: id(2) }).unwrap();
        assert_eq!(smaller.member_ids(), vec![id(1), id(3), id(4), id(5)]);
        assert_eq!(smaller.version(), 1);
        assert!(matches!(
            smaller.validate_exit(id(1)),
            Err(Error::PoolTooSmall { min: 4 })
        ));
    }

    #[test]
    fn join_appends_in_committee_order_and_bumps_version() {
        let p = pool(&[(1, 100), (2, 200), (3, 300), (4, 400)]);
        let q = p
            .apply(&Change::Join {
                node: id(6),
                stake: 700,
            })
            .unwrap();
        assert_eq!(q.member_ids(), vec![id(1), id(2), id(3), id(4), id(6)]);
        assert_eq!(q.version(), 1);
        assert_eq!(q.threshold(), 4);
        let committee = q.committee().unwrap();
        assert_eq!(committee.threshold(), 4);
        assert_eq!(committee.members(), q.member_ids().as_slice());
    }

    #[test]
    fn genesis_members_must_satisfy_the_rules() {
        let bad = Pool::new(
            rules(&[1, 2, 3]),
            vec![
                Member {
                    node: id(1),
                    stake: 100,
                },
                Member {
                    node: id(2),
                    stake: 100,
                },
                Member {
                    node: id(8),
                    stake: 100,
                },
            ],
            0,
        );
        assert!(matches!(bad, Err(Error::NotWhitelisted(n)) if n == id(8)));
        let too_small = Pool::new(
            rules(&[1, 2]),
            vec![
                Member {
                    node: id(1),
                    stake: 100,
                },
                Member {
                    node: id(2),
                    stake: 100,
                },
            ],
            0,
        );
        assert!(matches!(too_small, Err(Error::PoolTooSmall { min: 4 })));
        let dup = Pool::new(
            rules(&[1, 2]),
            vec![
                Member {
                    node: id(1),
                    stake: 100,
                },
                Member {
                    node: id(1),
                    stake: 100,
                },
                Member {
                    node: id(2),
                    stake: 100,
                },
            ],
            0,
        );
        assert!(matches!(dup, Err(Error::AlreadyMember(_))));
    }

    #[test]
    fn l1_stakes_are_gwei_rounded_down_at_least_one() {
        use alloy::primitives::U256;
        assert_eq!(stake_from_wei(U256::from(10u128.pow(18))), 1_000_000_000);
        assert_eq!(stake_from_wei(U256::from(1_999_999_999u64)), 1);
        assert_eq!(stake_from_wei(U256::from(1u64)), 1);
        assert_eq!(stake_from_wei(U256::MAX), u64::MAX);
        // L1 rules: no whitelist of their own, any positive stake.
        let p = Pool::new(
            PoolRules::l1(4, 10),
            (1..=4)
                .map(|k| Member {
                    node: id(k),
                    stake: 1,
                })
                .collect(),
            0,
        )
        .unwrap();
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn block_producer_is_deterministic_per_seed_and_epoch() {
        let p = pool(&[(1, 100), (2, 200), (3, 300), (4, 400)]);
        let seed = [7u8; 32];
        for epoch in 0..200 {
            let a = p.block_producer(&seed, epoch).unwrap();
            let b = p.clone().block_producer(&seed, epoch).unwrap();
            assert_eq!(a, b);
            assert!(p.is_member(&a));
        }
        // Another seed gives another schedule.
        let schedule = |s: [u8; 32]| -> Vec<NodeId> {
            (0..64).map(|e| p.block_producer(&s, e).unwrap()).collect()
        };
        assert_ne!(schedule([7; 32]), schedule([8; 32]));
        // Producers rotate across epochs.
        let distinct: BTreeSet<NodeId> = schedule([7; 32]).into_iter().collect();
        assert!(distinct.len() >= 3);
    }

    #[test]
    fn block_producer_frequency_is_proportional_to_stake() {
        let stakes = [(1u8, 100u64), (2, 200), (3, 300), (4, 400)];
        let p = pool(&stakes);
        let seed = [42u8; 32];
        let epochs = 20_000u64;
        let mut counts = std::collections::HashMap::new();
        for epoch in 0..epochs {
            *counts
                .entry(p.block_producer(&seed, epoch).unwrap())
                .or_insert(0u64) += 1;
        }
        for (k, stake) in stakes {
            let expected = epochs as f64 * stake as f64 / 1000.0;
            let got = counts[&id(k)] as f64;
            // Fixed seed, so deterministic; and a 10% relative tolerance is more than 4
            // binomial standard deviations for every member here.
            assert!(
                (got - expected).abs() < expected * 0.10,
                "member {k} with stake {stake}: {got} of {epochs}, expected ~{expected}"
            );
        }
    }
}
