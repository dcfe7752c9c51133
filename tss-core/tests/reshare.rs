//! Resharing moves a key to a new committee; the address stays, old shares retire only
//! after every new member confirmed.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{ProjectivePoint, PublicKey, Scalar};
use proptest::prelude::*;
use transport::{Fault, FaultPlan, FaultyTransport, NodeId};
use tss_core::reshare::{ComplaintEvidence, Finding};
use tss_core::{
    keccak256, Committee, KeyShare, ProtocolKind, PublicKeyInfo, ReshareOutcome, ReshareRequest,
    TssError, TssNode,
};

type Stored = Arc<Mutex<HashMap<NodeId, Vec<u8>>>>;

/// A store step that keeps the share's secret bytes in `stored`.
fn store_into(stored: &Stored, node: NodeId) -> impl FnOnce(&KeyShare) -> tss_core::Result<()> {
    let stored = stored.clone();
    move |share| {
        let bytes = share.to_secret_bytes()?;
        stored.lock().unwrap().insert(node, bytes.to_vec());
        Ok(())
    }
}

/// A node of a reshare run: its TssNode and, for old members, where its old share is.
struct Runner {
    node: Arc<TssNode>,
    old: Option<(Arc<Vec<Party>>, usize)>,
}

fn runners_of(old: &Arc<Vec<Party>>) -> HashMap<NodeId, Runner> {
    old.iter()
        .enumerate()
        .map(|(i, p)| {
            (
                p.node.node_id(),
                Runner {
                    node: p.node.clone(),
                    old: Some((old.clone(), i)),
                },
            )
        })
        .collect()
}

/// Runs a reshare among `runners` (keyed by node id) and returns every party's result.
async fn run_reshare(
    runners: &HashMap<NodeId, Runner>,
    request: &ReshareRequest,
    stored: &Stored,
    failing_persist: Option<NodeId>,
) -> HashMap<NodeId, tss_core::Result<ReshareOutcome>> {
    let mut tasks = Vec::new();
    for id in request.participants() {
        let runner = &runners[&id];
        let node = runner.node.clone();
        let old = runner.old.clone();
        let request = request.clone();
        let is_new = request.new_committee.index_of(&id).is_some();
        let primes = is_new.then(|| primes_for(&id));
        let failing = failing_persist == Some(id);
        let stored = stored.clone();
        tasks.push((
            id,
            tokio::spawn(async move {
                let old_share = old.as_ref().map(|(parties, i)| &parties[*i].share);
                reshare_party(&node, &request, old_share, primes, |share| {
                    if failing {
                        return Err(TssError::Store(std::io::Error::other("disk full").into()));
                    }
                    store_into(&stored, id)(share)
                })
                .await
            }),
        ));
    }
    let mut out = HashMap::new();
    for (id, task) in tasks {
        out.insert(id, task.await.unwrap());
    }
    out
}

/// The runners of a reshare from `old` to `new_members`: the old members with their
/// shares, and `pool`'s node for each new member that is not one of them.
fn runners_with(
    pool: &SharedPool,
    old: &Arc<Vec<Party>>,
    new_members: &[NodeId],
) -> HashMap<NodeId, Runner> {
    let mut runners = runners_of(old);
    for id in new_members {
        runners.entry(*id).or_insert_with(|| Runner {
            node: pool.node(*id),
            old: None,
        });
    }
    runners
}

/// The request to reshare the key of `old` (next generation, fresh execution id) by
/// `dealers` to `new_members` with threshold `t`.
fn reshare_request(
    old: &PublicKeyInfo,
    dealers: Vec<NodeId>,
    new_members: &[NodeId],
    t: u16,
) -> ReshareRequest {
    let mut all = dealers.clone();
    all.extend(new_members.iter().copied());
    ReshareRequest {
        new_generation: old.generation.next(),
        old: old.clone(),
        dealers,
        new_committee: Committee::new(new_members.to_vec(), t).unwrap(),
        eid: fresh_eid(ProtocolKind::Reshare, &old.key_id, &all),
    }
}

/// Old pool (the binary's shared 2-of-3 pool, or a fresh one) + reshare to `new_members`
/// with threshold `new_t`; returns new parties (in new committee order) and the old
/// public info.
async fn reshare_to(
    old_n: u8,
    old_t: u16,
    new_members: Vec<NodeId>,
    new_t: u16,
) -> (Vec<Party>, PublicKeyInfo) {
    let fresh;
    let pool_ref: &SharedPool = if (old_n, old_t) == (3, 2) {
        shared_2_of_3().await
    } else {
        let (network, parties) = pool(old_n, old_t).await;
        fresh = SharedPool::new(network, parties);
        &fresh
    };
    let old_info = pool_ref.parties[0].share.public_info();
    let runners = runners_with(pool_ref, &pool_ref.parties, &new_members);
    let dealers = old_info.committee.members()[..usize::from(old_t)].to_vec();
    let request = reshare_request(&old_info, dealers, &new_members, new_t);
    let new_committee = request.new_committee.clone();
    let stored = Stored::default();
    let mut results = run_reshare(&runners, &request, &stored, None).await;
    let mut parties = Vec::new();
    for id in request.participants() {
        let outcome = results.remove(&id).unwrap().expect("reshare succeeds");
        assert!(outcome.may_retire_old_share(), "all new members confirmed");
        if let Some(share) = outcome.new_share {
            assert!(new_committee.index_of(&id).is_some());
            // What was persisted is the share itself.
            let persisted = KeyShare::from_secret_bytes(&stored.lock().unwrap()[&id]).unwrap();
            assert_eq!(persisted.public_info(), share.public_info());
            parties.push((id, share));
        } else {
            assert!(
                new_committee.index_of(&id).is_none(),
                "a new member got no share"
            );
        }
    }
    let parties = new_members
        .iter()
        .map(|id| {
            let share = parties.iter().position(|(p, _)| p == id).unwrap();
            Party {
                node: runners[id].node.clone(),
                share: parties.remove(share).1,
            }
        })
        .collect();
    (parties, old_info)
}

/// The new committee signs (presign + online) and the signature recovers the old address.
async fn assert_new_committee_signs_for_old_address(parties: Vec<Party>, old: &PublicKeyInfo) {
    for p in &parties {
        assert_eq!(p.share.generation(), old.generation.next());
    }
    assert_new_committee_signs_for_old_address_now(Arc::new(parties), old).await;
}

/// The committee of `parties` (any generation) signs (presign + online by its last `t`
/// members) and the signature recovers `old`'s address.
async fn assert_new_committee_signs_for_old_address_now(
    parties: Arc<Vec<Party>>,
    old: &PublicKeyInfo,
) {
    let old_key = PublicKey::from_sec1_bytes(&old.public_key).unwrap();
    let old_address = tss_core::EthAddress::from_public_key(&old_key.into());
    for p in parties.iter() {
        assert_eq!(p.share.ethereum_address(), old_address, "address unchanged");
    }
    let t = usize::from(parties[0].share.committee().threshold());
    let signers: Vec<usize> = (parties.len() - t..parties.len()).collect();
    let presig = presign(&parties, &signers).await;
    let batch = b"batch after reshare";
    let digest = keccak256(batch);
    for sig in sign_online(&parties, &signers, presig, batch).await {
        assert_eq!(sig.unwrap().recover_address(&digest).unwrap(), old_address);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resharing_to_a_joined_sequencer_keeps_ethereum_address() {
    let (parties, old) = reshare_to(3, 2, node_ids(4), 3).await;
    assert_new_committee_signs_for_old_address(parties, &old).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resharing_after_a_sequencer_exits_keeps_ethereum_address() {
    let (parties, old) = reshare_to(4, 3, node_ids(3), 2).await;
    assert_new_committee_signs_for_old_address(parties, &old).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resharing_can_change_the_threshold() {
    let (parties, old) = reshare_to(3, 2, node_ids(3), 3).await;
    assert_eq!(parties[0].share.committee().threshold(), 3);
    assert_new_committee_signs_for_old_address(parties, &old).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resharing_to_a_fully_replaced_committee_keeps_ethereum_address() {
    let (parties, old) = reshare_to(3, 2, vec![node_id(4), node_id(5), node_id(6)], 2).await;
    assert_new_committee_signs_for_old_address(parties, &old).await;
}

fn point(bytes: &[u8]) -> ProjectivePoint {
    PublicKey::from_sec1_bytes(bytes).unwrap().to_projective()
}

/// Interpolates at 0 "in the exponent" the public shares of the given (party index,
/// public share) pairs. Equal to the public key exactly when the secret shares would
/// reconstruct the secret key.
fn interpolate(points: &[(u64, ProjectivePoint)]) -> ProjectivePoint {
    let xs: Vec<Scalar> = points.iter().map(|(i, _)| Scalar::from(i + 1)).collect();
    let mut acc = ProjectivePoint::IDENTITY;
    for (j, (_, share)) in points.iter().enumerate() {
        let mut lambda = Scalar::ONE;
        for (m, x_m) in xs.iter().enumerate() {
            if m != j {
                lambda *= *x_m * (*x_m - xs[j]).invert().unwrap();
            }
        }
        acc += share * &lambda;
    }
    acc
}

#[tokio::test(flavor = "multi_thread")]
async fn old_shares_cannot_be_combined_with_new_ones() {
    let (parties, old) = reshare_to(3, 2, node_ids(3), 2).await;
    let new = parties[0].share.public_info();
    let y = point(&old.public_key);
    let old_shares: Vec<ProjectivePoint> = old.public_shares.iter().map(|b| point(b)).collect();
    let new_shares: Vec<ProjectivePoint> = new.public_shares.iter().map(|b| point(b)).collect();
    // Sanity: each generation on its own reconstructs the key.
    assert_eq!(interpolate(&[(0, old_shares[0]), (1, old_shares[1])]), y);
    assert_eq!(interpolate(&[(0, new_shares[0]), (2, new_shares[2])]), y);
    // Any old/new mix does not.
    for i in 0..3u64 {
        for j in 0..3u64 {
            if i != j {
                let mixed =
                    interpolate(&[(i, old_shares[i as usize]), (j, new_shares[j as usize])]);
                assert_ne!(
                    mixed.to_affine().to_encoded_point(true),
                    y.to_affine().to_encoded_point(true),
                    "old share {i} + new share {j} must not reconstruct the key"
                );
            }
        }
    }
    // The new shares really are new: none equals an old one.
    for (a, b) in old_shares.iter().zip(&new_shares) {
        assert_ne!(a, b);
    }
}

/// A share mangled on the wire no longer carries a valid dealer signature: the victim's
/// complaint has no evidence anyone can check, so the run aborts for everyone naming
/// nobody as culprit and both as suspects (the victim could be lying). A dealer's *signed*
/// bad share is convicted (tests/reshare_complaints.rs).
#[tokio::test(flavor = "multi_thread")]
async fn a_share_mangled_on_the_wire_aborts_the_reshare_unresolved_naming_both() {
    let (network, old) = pool(3, 2).await;
    let old_info = old[0].share.public_info();
    let cheater = old[0].node.node_id();
    let victim = node_id(4);
    let old = Arc::new(old);
    let mut runners = runners_of(&old);
    for p in old.iter() {
        let id = p.node.node_id();
        let node = if id == cheater {
            // The dealer's private share to the victim arrives altered.
            Arc::new(
                TssNode::new(Arc::new(FaultyTransport::new(
                    network.endpoint(id),
                    FaultPlan::single(Fault::CorruptDirectTo(victim)),
                )))
                .with_identity(signer_for(&id))
                .unwrap()
                .with_idle_timeout(Duration::from_secs(300)),
            )
        } else {
            p.node.clone()
        };
        runners.get_mut(&id).unwrap().node = node;
    }
    runners.insert(
        victim,
        Runner {
            node: nodes(&network, &[victim]).remove(0),
            old: None,
        },
    );
    let new_members = node_ids(4);
    let dealers = old_info.committee.members()[..2].to_vec();
    let mut all = dealers.clone();
    all.extend(new_members.iter().copied());
    let request = ReshareRequest {
        new_generation: old_info.generation.next(),
        old: old_info.clone(),
        dealers,
        new_committee: Committee::new(new_members, 3).unwrap(),
        eid: fresh_eid(ProtocolKind::Reshare, &old_info.key_id, &all),
    };
    let stored = Stored::default();
    let results = run_reshare(&runners, &request, &stored, None).await;
    for (id, result) in results {
        match result {
            Err(TssError::Misbehaviour {
                culprits, evidence, ..
            }) => {
                assert_eq!(culprits, vec![], "{id} convicts nobody");
                assert_eq!(evidence.len(), 1, "{id}: {evidence:?}");
                assert_eq!(
                    (evidence[0].complainer, evidence[0].dealer),
                    (victim, cheater)
                );
                assert_eq!(evidence[0].evidence, ComplaintEvidence::NoValidShare);
                assert_eq!(evidence[0].finding, Finding::Unresolved);
            }
            other => panic!("{id}: expected an unresolved complaint, got {other:?}"),
        }
    }
    assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_cannot_store_its_new_share_confirms_nothing_and_nobody_may_retire_the_old_one(
) {
    // Node 3's store fails (disk full): it never confirms, so the others' runs end without
    // a certificate. (A confirmation shown to some members only, the split view, is in
    // reshare_certificate.rs: an_equivocating_joiner_cannot_split_the_pool_across_generations
    // and a_member_that_missed_the_certificate_activates_after_restart_by_fetching_it.)
    let (network, old) = pool(3, 2).await;
    let old_info = old[0].share.public_info();
    let old = Arc::new(old);
    let mut runners = runners_of(&old);
    for p in old.iter() {
        let id = p.node.node_id();
        // Short idle timeout: the missing confirmation is waited for only this long.
        let node = Arc::new(
            TssNode::new(Arc::new(network.endpoint(id)))
                .with_identity(signer_for(&id))
                .unwrap()
                .with_idle_timeout(Duration::from_secs(45)),
        );
        runners.get_mut(&id).unwrap().node = node;
    }
    let failing = node_id(3);
    let request = ReshareRequest {
        new_generation: old_info.generation.next(),
        old: old_info.clone(),
        dealers: old_info.committee.members()[..2].to_vec(),
        new_committee: Committee::new(node_ids(3), 2).unwrap(),
        eid: fresh_eid(ProtocolKind::Reshare, &old_info.key_id, &node_ids(3)),
    };
    let stored = Stored::default();
    let results = run_reshare(&runners, &request, &stored, Some(failing)).await;
    for (id, result) in results {
        if id == failing {
            assert!(
                matches!(
                    result,
                    Err(TssError::Store(ref e))
                        if e.downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.to_string() == "disk full")
                ),
                "{result:?}"
            );
            continue;
        }
        let outcome = result.expect("others finish");
        assert!(
            !outcome.may_retire_old_share(),
            "{id} must keep its old share"
        );
        assert_eq!(outcome.missing_confirmations, vec![failing]);
    }
}

/// One reshare of a random sequence: the new committee (node numbers, 2 or 3 of nodes
/// 1..=6: joins, exits and replacements), its threshold, and a seed that picks which old
/// members deal. Committees stay small: aux-info for the new committee is most of a
/// reshare's time, and it grows with the committee (4 members made this test 6 minutes
/// on 2 cores; 4-member committees are covered by the fixed tests above).
fn random_step() -> impl Strategy<Value = (Vec<u8>, u16, u64)> {
    proptest::sample::subsequence((1u8..=6).collect::<Vec<_>>(), 2..=3).prop_flat_map(|members| {
        let n = members.len() as u16;
        (Just(members), 2..=n, any::<u64>())
    })
}

/// Every `size`-subset of `0..n`, in order.
fn subsets(n: usize, size: usize) -> Vec<Vec<usize>> {
    if size == 0 {
        return vec![Vec::new()];
    }
    if size > n {
        return Vec::new();
    }
    let mut out = subsets(n - 1, size);
    for mut s in subsets(n - 1, size - 1) {
        s.push(n - 1);
        out.push(s);
    }
    out
}

/// Checks `info`'s public shares in the exponent: every `t`-subset interpolates to the
/// public key `y` (so those members' secret shares reconstruct the key: they can sign),
/// and no `(t - 1)`-subset does.
fn assert_exactly_t_reconstruct(
    info: &PublicKeyInfo,
    y: ProjectivePoint,
) -> Result<(), TestCaseError> {
    let t = usize::from(info.committee.threshold());
    let shares: Vec<ProjectivePoint> = info.public_shares.iter().map(|b| point(b)).collect();
    let at = |set: &[usize]| -> Vec<(u64, ProjectivePoint)> {
        set.iter().map(|&i| (i as u64, shares[i])).collect()
    };
    for set in subsets(shares.len(), t) {
        prop_assert_eq!(
            interpolate(&at(&set)),
            y,
            "the {}-subset {:?} must reconstruct",
            t,
            set
        );
    }
    for set in subsets(shares.len(), t - 1) {
        prop_assert_ne!(
            interpolate(&at(&set)),
            y,
            "the {}-subset {:?} must not",
            t - 1,
            set
        );
    }
    Ok(())
}

proptest! {
    // Each case runs two reshares with aux-info for the new committee (seconds each on
    // 2 cores); 5 cases (8 until the CI's time on 2 cores neared its 60-minute bound). A
    // failing case is kept in proptest-regressions/ and replayed first.
    // Not in the default run (about 3 minutes on 2 cores); .ci/run runs it as a step of
    // its own: `cargo test -p tss-core --test reshare -- --ignored`.
    #![proptest_config(ProptestConfig {
        cases: 5,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        .. ProptestConfig::default()
    })]
    #[test]
    #[ignore = "heavy: 10 reshares; run with --ignored"]
    fn random_reshare_sequences_keep_the_address_and_exactly_t_members_can_sign(
        steps in proptest::collection::vec(random_step(), 2)
    ) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // Joins, exits and threshold changes from the build's 2-of-3 key of nodes 1..=3,
            // each step dealt by a random old threshold of old members. Nodes and network
            // of this case's own: a node holds one generation line of a key, and the other
            // tests of this binary reshare the same key on the shared pool's nodes.
            let (network, parties) = pool(3, 2).await;
            let pool = SharedPool::new(network, parties);
            let original = pool.parties[0].share.public_info();
            let y = point(&original.public_key);
            let address = pool.parties[0].share.ethereum_address();
            let mut current = pool.parties.clone();
            for (members, t, seed) in steps {
                let old = current[0].share.public_info();
                let mut dealers = old.committee.members().to_vec();
                dealers.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
                dealers.truncate(usize::from(old.committee.threshold()));
                let new_members: Vec<NodeId> = members.iter().map(|k| node_id(*k)).collect();
                let runners = runners_with(&pool, &current, &new_members);
                let request = reshare_request(&old, dealers, &new_members, t);
                let mut results = run_reshare(&runners, &request, &Stored::default(), None).await;
                let mut next = Vec::new();
                for id in &new_members {
                    let outcome = results.remove(id).unwrap().expect("the reshare succeeds");
                    prop_assert!(outcome.may_retire_old_share(), "every new member confirmed");
                    let share = outcome.new_share.expect("a new member gets a share");
                    prop_assert_eq!(share.ethereum_address(), address, "the address is kept");
                    prop_assert_eq!(share.generation(), old.generation.next());
                    next.push(Party { node: runners[id].node.clone(), share });
                }
                let info = next[0].share.public_info();
                prop_assert_eq!(&info.public_key, &original.public_key);
                prop_assert_eq!(info.committee.threshold(), t);
                assert_exactly_t_reconstruct(&info, y)?;
                current = Arc::new(next);
            }
            // The last committee signs for the original address (its last t members).
            assert_new_committee_signs_for_old_address_now(current, &original).await;
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dealer_sending_one_member_undecodable_commitments_aborts_the_reshare_for_everyone() {
    let (network, old) = pool(3, 2).await;
    let old_info = old[0].share.public_info();
    let cheater = old[0].node.node_id();
    let victim = old[2].node.node_id();
    let old = Arc::new(old);
    let mut runners = runners_of(&old);
    // The dealer's broadcasts reach the victim garbled (always undecodable: a flipped
    // byte could still decode, to a different valid view, and end in the echo check).
    runners.get_mut(&cheater).unwrap().node = Arc::new(
        TssNode::new(Arc::new(FaultyTransport::new(
            network.endpoint(cheater),
            FaultPlan::single(Fault::GarbleBroadcastTo(vec![victim])),
        )))
        .with_identity(signer_for(&cheater))
        .unwrap()
        .with_idle_timeout(Duration::from_secs(300)),
    );
    let request = ReshareRequest {
        new_generation: old_info.generation.next(),
        old: old_info.clone(),
        dealers: old_info.committee.members()[..2].to_vec(),
        new_committee: Committee::new(node_ids(3), 2).unwrap(),
        eid: fresh_eid(ProtocolKind::Reshare, &old_info.key_id, &node_ids(3)),
    };
    let stored = Stored::default();
    let results = run_reshare(&runners, &request, &stored, None).await;
    for (id, result) in results {
        match result {
            // The others cannot check what the victim received: its complaint is
            // unresolved, naming both, convicting nobody.
            Err(TssError::Misbehaviour {
                culprits, evidence, ..
            }) if id != victim => {
                assert_eq!(culprits, vec![], "{id} convicts nobody");
                assert_eq!(evidence.len(), 1, "{id}: {evidence:?}");
                assert_eq!(
                    (evidence[0].complainer, evidence[0].dealer),
                    (victim, cheater)
                );
                assert_eq!(evidence[0].evidence, ComplaintEvidence::InvalidMessage);
                assert_eq!(evidence[0].finding, Finding::Unresolved);
            }
            // The victim knows who sent it garbage (the transport authenticates).
            Err(TssError::MalformedMessage { from, .. }) if id == victim => {
                assert_eq!(from, cheater)
            }
            other => panic!("{id} must abort naming the dealer, got {other:?}"),
        }
    }
    assert!(stored.lock().unwrap().is_empty(), "no new share is stored");
}

/// A reshare of the shared 2-of-3 key with every kind of place: dealers 1 and 2, new
/// committee {2, 3, 4} (threshold 2), so 1 only deals, 2 deals and stays, 3 stays without
/// dealing and 4 joins; `ids` beyond the fourth take no part.
fn roles_request(shared: &SharedPool, ids: &[NodeId]) -> ReshareRequest {
    let old = shared.parties[0].share.public_info();
    let dealers = vec![ids[0], ids[1]];
    let new_committee = Committee::new(ids[1..4].to_vec(), 2).unwrap();
    let mut all = dealers.clone();
    all.extend(new_committee.members().iter().copied());
    ReshareRequest {
        eid: fresh_eid(ProtocolKind::Reshare, &old.key_id, &all),
        new_generation: old.generation.next(),
        old,
        dealers,
        new_committee,
    }
}

/// A party handed the wrong role for its place in the request (a dealer without its old
/// share, a joiner posing as a dealer, a staying dealer that would not take a new share, a
/// new member that would deal) is refused at once with a typed error naming the role it
/// has; the run never starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_does_not_match_the_request_is_refused_naming_the_expected_role() {
    use tss_core::ReshareRole;
    let shared = shared_2_of_3().await;
    let ids = node_ids(4);
    let request = roles_request(shared, &ids);
    let share_of = |i: usize| &shared.parties[i].share;
    let cases: Vec<(NodeId, ReshareRole<'_>, &str)> = vec![
        (
            ids[0],
            ReshareRole::NewMember {
                primes: Some(primes_for(&ids[0])),
            },
            "is a dealer in",
        ),
        (
            ids[0],
            ReshareRole::DealerAndNewMember {
                old_share: share_of(0),
                primes: Some(primes_for(&ids[0])),
            },
            "is a dealer in",
        ),
        (
            ids[1],
            ReshareRole::Dealer {
                old_share: share_of(1),
            },
            "is a dealer and new member in",
        ),
        (
            ids[2],
            ReshareRole::DealerAndNewMember {
                old_share: share_of(2),
                primes: Some(primes_for(&ids[2])),
            },
            "is a new member in",
        ),
        (
            ids[3],
            ReshareRole::Dealer {
                old_share: share_of(0),
            },
            "is a new member in",
        ),
    ];
    for (id, role, expected) in cases {
        let node = shared.node(id);
        let given = format!("{role:?}");
        // A refused role returns at once; an accepted one would wait for peers that never
        // come, so the timeout only guards against a hang.
        let result = tokio::time::timeout(Duration::from_secs(60), node.reshare(&request, role))
            .await
            .unwrap_or_else(|_| panic!("{id} with role {given} was not refused"));
        match result {
            Err(TssError::InvalidParticipants(why)) => assert!(
                why.contains(expected),
                "{id} given {given}: the error should say it {expected} the reshare: {why}"
            ),
            Err(other) => panic!("{id} given {given}: wrong error {other}"),
            Ok(_) => panic!("{id} given {given}: the role was accepted"),
        }
    }
}

/// `ReshareRole::for_party` builds each party's role from what it holds, and says what is
/// missing: a dealer without its old share, a new member without primes, a node outside
/// the request.
#[tokio::test(flavor = "multi_thread")]
async fn the_role_for_a_party_is_built_from_its_place_and_says_what_is_missing() {
    use tss_core::ReshareRole;
    let shared = shared_2_of_3().await;
    let ids = node_ids(5);
    let request = roles_request(shared, &ids);
    let share_of = |i: usize| Some(&shared.parties[i].share);
    let role = |i: usize, share, primes| ReshareRole::for_party(&request, &ids[i], share, primes);
    // Each place gets its role; primes given to a leaving dealer are not needed.
    assert!(matches!(
        role(0, share_of(0), Some(primes_for(&ids[0]))),
        Ok(ReshareRole::Dealer { .. })
    ));
    assert!(matches!(
        role(1, share_of(1), Some(primes_for(&ids[1]))),
        Ok(ReshareRole::DealerAndNewMember { .. })
    ));
    assert!(matches!(
        role(2, None, Some(primes_for(&ids[2]))),
        Ok(ReshareRole::NewMember { .. })
    ));
    assert!(matches!(
        role(3, None, Some(primes_for(&ids[3]))),
        Ok(ReshareRole::NewMember { .. })
    ));
    // What is missing is named.
    assert!(
        matches!(role(0, None, None), Err(TssError::InvalidKeyShare(why)) if why.contains("old share"))
    );
    assert!(
        matches!(role(1, share_of(1), None), Err(TssError::InvalidKeyShare(why)) if why.contains("primes"))
    );
    assert!(
        matches!(role(3, None, None), Err(TssError::InvalidKeyShare(why)) if why.contains("primes"))
    );
    // Node 5 takes no part.
    assert!(matches!(
        role(4, share_of(2), Some(primes_for(&ids[4]))),
        Err(TssError::NotACommitteeMember(id)) if id == ids[4]
    ));
}
