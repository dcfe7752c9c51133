//! ECDSA over secp256k1 on CGGMP21: keygen, aux-info, presign, online and full signing.
//!
//! # Presignatures sign messages, never caller-supplied digests (RUSTSEC-2025-0127)
//!
//! A presignature fixes the signature's nonce point `R` before anything is signed, and
//! every signer holding it knows `R`. If signers issued partial signatures on a 32-byte
//! digest handed to them ("raw signing"), a malicious signer could pick that digest from
//! `R` so that the resulting signature converts into a valid signature on a message of
//! its own choice (RUSTSEC-2025-0127 / CVE-2025-66017 in `cggmp21` 0.6.3; reproduced in
//! `tests/presignature_forgery.rs`). So [`TssNode::sign_with_presignature`] takes the
//! **message bytes** and every signer computes `keccak256(message)` itself: steering the
//! signed digest to a chosen value would mean inverting keccak256.
//!
//! Full interactive signing ([`TssNode::sign`]) still takes a digest: there the digest is
//! every party's input before the nonce exists, so no party can choose it knowing `R`.
//!
//! HD derivation is never combined with presignatures (the advisory's other case, which
//! lowers security to about 85 bits): `cggmp21`'s `hd-wallet` feature is off, so
//! `Presignature::set_derivation_path` is not even compiled in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cggmp21::generic_ec::Scalar;
use cggmp21::key_share::AnyKeyShare;
use cggmp21::supported_curves::Secp256k1;
use cggmp21::DataToSign;
use k256::ecdsa::VerifyingKey;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use round_based::MpcParty;
use serde::{Deserialize, Serialize};
use transport::{Destination, NodeId, SessionChannel, SessionConfig, Transport};
use zeroize::Zeroizing;

use crate::error::{ProtocolKind, Result, TssError};
use crate::ethereum::{keccak256, EthSignature};
use crate::identity::IdentitySigner;
use crate::ids::{Committee, ExecutionId, Generation, KeyId};
use crate::primes::PaillierPrimes;
use crate::protocol::Protocol;
use crate::wire::{
    classify_error, decode_message, delivery_with_heartbeats, encode_message, Delivery, Liveness,
    Tracked,
};

/// The curve.
pub type Curve = Secp256k1;

pub use crate::share::KeyShare;
use crate::share::ShareSecret;

#[derive(Serialize, Deserialize)]
struct StoredKeyShare {
    version: u8,
    /// Absent in shares sealed before protocols were recorded (they are CGGMP21's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    key_id: KeyId,
    generation: Generation,
    committee: Committee,
    local: NodeId,
    share: cggmp21::KeyShare<Curve>,
}

const STORED_VERSION: u8 = 1;

/// A CGGMP21 share's sealed bytes (see [`KeyShare::to_secret_bytes`]).
pub(crate) fn seal_share(
    share: &KeyShare,
    inner: &cggmp21::KeyShare<Curve>,
) -> Result<Zeroizing<Vec<u8>>> {
    let stored = StoredKeyShare {
        version: STORED_VERSION,
        protocol: Some(Protocol::Cggmp21),
        key_id: share.key_id.clone(),
        generation: share.generation,
        committee: share.committee.clone(),
        local: share.local,
        share: inner.clone(),
    };
    serde_json::to_vec(&stored)
        .map(Zeroizing::new)
        .map_err(|e| TssError::Decode {
            what: "key share",
            reason: e.to_string(),
        })
}

/// Restores a CGGMP21 share from [`seal_share`] output; validates it.
pub(crate) fn unseal_share(bytes: &[u8]) -> Result<KeyShare> {
    crate::protocol::expect_stored_protocol(bytes, Protocol::Cggmp21)?;
    let stored: StoredKeyShare = serde_json::from_slice(bytes).map_err(|e| TssError::Decode {
        what: "key share",
        reason: e.to_string(),
    })?;
    if stored.version != STORED_VERSION {
        return Err(TssError::Decode {
            what: "key share",
            reason: format!("unsupported version {}", stored.version),
        });
    }
    let i = stored.committee.require_index(&stored.local)?;
    if stored.share.i != i
        || stored.share.n() != stored.committee.n()
        || stored.share.min_signers() != stored.committee.threshold()
    {
        return Err(TssError::InvalidKeyShare(
            "share does not match its committee".into(),
        ));
    }
    Ok(KeyShare {
        key_id: stored.key_id,
        generation: stored.generation,
        committee: stored.committee,
        local: stored.local,
        secret: ShareSecret::Cggmp21(Box::new(stored.share)),
    })
}

/// Aux info of one party (its Paillier key and everyone's public parameters). Secret.
pub struct AuxInfo(pub(crate) cggmp21::key_share::AuxInfo);

impl std::fmt::Debug for AuxInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuxInfo([REDACTED])")
    }
}

/// A presignature: lets its signers sign one message in a single round. Used at most
/// once: it is not `Clone`, not serializable, and the node's store hands it out once.
pub struct Presignature {
    id: ExecutionId,
    key_id: KeyId,
    generation: Generation,
    signers: Vec<NodeId>,
    public_key: VerifyingKey,
    inner: cggmp21::Presignature<Curve>,
}

impl std::fmt::Debug for Presignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presignature")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("signers", &self.signers)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// How many used (or discarded) presignature ids a node remembers, to answer a second use
/// with [`TssError::PresignatureAlreadyUsed`]. Older ids are forgotten so memory stays
/// bounded; a presignature is removed when used, so a forgotten id still cannot sign
/// again (it fails with [`TssError::UnknownPresignature`]).
const USED_PRESIGNATURES_REMEMBERED: usize = 100_000;

/// Presignatures held in memory only (never persisted or restored), each handed out once.
#[derive(Default)]
struct PresignatureStore {
    ready: HashMap<ExecutionId, Presignature>,
    used: HashSet<ExecutionId>,
    /// `used` in the order the ids were used (oldest first).
    used_order: std::collections::VecDeque<ExecutionId>,
}

impl PresignatureStore {
    fn mark_used(&mut self, id: ExecutionId) {
        if self.used.insert(id) {
            self.used_order.push_back(id);
            while self.used_order.len() > USED_PRESIGNATURES_REMEMBERED {
                if let Some(oldest) = self.used_order.pop_front() {
                    self.used.remove(&oldest);
                }
            }
        }
    }
}

/// A party's entry point to the threshold protocols. Cheap to share (`Arc`) and runs many
/// sessions at once.
pub struct TssNode {
    transport: Arc<dyn Transport>,
    idle_timeout: Duration,
    presignatures: Mutex<PresignatureStore>,
    identity: Option<Arc<dyn IdentitySigner>>,
    aux_info_delay: Duration,
    pub(crate) dkls23_phase_delay: Duration,
    /// Test hook: corrupt this node's oblivious-transfer data in DKLs23 signing.
    pub(crate) dkls23_tamper_ot: std::sync::atomic::AtomicBool,
    /// Test hook: reshare runs (by execution id; `None`: every run) in which this node
    /// misbehaves.
    #[cfg(feature = "test-hooks")]
    reshare_faults: Mutex<HashMap<Option<ExecutionId>, crate::reshare::ReshareFault>>,
}

impl std::fmt::Debug for TssNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TssNode")
            .field("node", &self.transport.local_node())
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl TssNode {
    /// A node on `transport`, with the transport's default idle timeout per session.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            idle_timeout: transport::DEFAULT_IDLE_TIMEOUT,
            presignatures: Mutex::default(),
            identity: None,
            aux_info_delay: Duration::ZERO,
            dkls23_phase_delay: Duration::ZERO,
            dkls23_tamper_ot: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "test-hooks")]
            reshare_faults: Mutex::default(),
        }
    }

    /// Sets the key of this node's transport identity, with which it signs its reshare
    /// confirmations (needed by every node that joins a new committee). Fails with
    /// [`TssError::InvalidParticipants`] if its node id is not the transport's.
    pub fn with_identity(mut self, identity: Arc<dyn IdentitySigner>) -> Result<Self> {
        if identity.node_id() != self.transport.local_node() {
            return Err(TssError::InvalidParticipants(format!(
                "the identity key is {}'s, the transport is {}'s",
                identity.node_id(),
                self.transport.local_node()
            )));
        }
        self.identity = Some(identity);
        Ok(self)
    }

    /// The identity key set by [`TssNode::with_identity`].
    pub fn identity(&self) -> Option<&Arc<dyn IdentitySigner>> {
        self.identity.as_ref()
    }

    /// The idle timeout of this node's sessions.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Test hook (feature `test-hooks`): makes every DKLs23 computation phase of this
    /// node take `delay` longer, as on a loaded machine.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn with_dkls23_phase_delay(mut self, delay: Duration) -> Self {
        self.dkls23_phase_delay = delay;
        self
    }

    /// Test hook (feature `test-hooks`): makes every aux-info run of this node take
    /// `delay` longer, as on a loaded machine.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn with_aux_info_delay(mut self, delay: Duration) -> Self {
        self.aux_info_delay = delay;
        self
    }

    /// Test hook (feature `test-hooks`): from now on this node corrupts the
    /// oblivious-transfer data of its first DKLs23 signing message to every co-signer
    /// (the attack whose detection requires banning it: [`TssError::MustExclude`]).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn inject_dkls23_ot_tampering(&self) {
        self.dkls23_tamper_ot
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook (feature `test-hooks`): makes this node misbehave as `fault` says in the
    /// reshare run `eid` (a dishonest dealer or complainer running otherwise honest code).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn inject_reshare_fault(&self, eid: ExecutionId, fault: crate::reshare::ReshareFault) {
        self.reshare_faults.lock().insert(Some(eid), fault);
    }

    /// Test hook (feature `test-hooks`): [`TssNode::inject_reshare_fault`] for every
    /// reshare run without a fault of its own (e.g. runs of the pool layer, whose
    /// execution ids are not known in advance).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn inject_reshare_fault_in_every_run(&self, fault: crate::reshare::ReshareFault) {
        self.reshare_faults.lock().insert(None, fault);
    }

    /// The fault injected for the reshare run `eid` (always `None` without `test-hooks`).
    pub(crate) fn reshare_fault(&self, eid: &ExecutionId) -> Option<crate::reshare::ReshareFault> {
        #[cfg(feature = "test-hooks")]
        {
            let faults = self.reshare_faults.lock();
            faults
                .get(&Some(*eid))
                .or_else(|| faults.get(&None))
                .cloned()
        }
        #[cfg(not(feature = "test-hooks"))]
        {
            let _ = eid;
            None
        }
    }

    /// Sets how long any session may hear nothing before failing with
    /// [`TssError::Timeout`].
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.transport.local_node()
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The randomness of one protocol run: fresh from the OS, except in a `fuzzing`
    /// build after `tss_core::fuzzing::set_deterministic_rng`.
    fn run_rng(&self, eid: &ExecutionId) -> ChaCha20Rng {
        #[cfg(feature = "fuzzing")]
        if let Some(rng) = crate::fuzzing::run_rng(self.node_id(), eid) {
            return rng;
        }
        let _ = eid;
        ChaCha20Rng::from_entropy()
    }

    pub(crate) fn open(
        &self,
        eid: &ExecutionId,
        participants: &[NodeId],
    ) -> Result<SessionChannel> {
        let config = SessionConfig::new(participants.to_vec()).with_idle_timeout(self.idle_timeout);
        Ok(self.transport.open_session(eid.session_id(), config)?)
    }

    /// The session of `eid` among `participants` as a `round_based` delivery, with
    /// heartbeats while this party computes (see [`delivery_with_heartbeats`]): the
    /// session's idle timeout counts silence, not the others' CPU time.
    fn delivery<M>(
        &self,
        eid: &ExecutionId,
        participants: &[NodeId],
    ) -> Result<(Delivery<M>, Liveness)>
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let channel = self.open(eid, participants)?;
        Ok(delivery_with_heartbeats(
            channel,
            protocol_heartbeat_interval(self.idle_timeout),
        ))
    }

    /// Distributed key generation followed by aux-info generation: every member of
    /// `committee` runs this with the same `key_id`, `committee` and `eid`.
    pub async fn keygen(
        &self,
        key_id: KeyId,
        committee: Committee,
        eid: ExecutionId,
        primes: PaillierPrimes,
    ) -> Result<KeyShare> {
        let i = committee.require_index(&self.node_id())?;
        let dkg_eid = eid.sub("dkg");
        let mut rng = self.run_rng(&dkg_eid);
        let (delivery, liveness) = self.delivery(&dkg_eid, committee.members())?;
        let party = MpcParty::connected(delivery);
        let incomplete = cggmp21::keygen::<Curve>(
            cggmp21::ExecutionId::new(dkg_eid.as_bytes()),
            i,
            committee.n(),
        )
        .set_threshold(committee.threshold())
        .start(&mut rng, party);
        let incomplete = off_executor(liveness.track(incomplete))
            .await?
            .map_err(|e| classify_error(ProtocolKind::Keygen, committee.members(), e))?;
        drop(liveness);
        let aux = self.aux_info(&committee, eid.sub("aux"), primes).await?;
        let inner = cggmp21::KeyShare::from_parts((incomplete, aux.0))
            .map_err(|e| TssError::InvalidKeyShare(e.to_string()))?;
        Ok(KeyShare {
            key_id,
            generation: Generation(0),
            committee,
            local: self.node_id(),
            secret: ShareSecret::Cggmp21(Box::new(inner)),
        })
    }

    /// Distributed key generation with `protocol`: every member of `committee` runs
    /// this with the same arguments. `primes` are needed by protocols with Paillier keys
    /// ([`ThresholdProtocol::needs_paillier_primes`](crate::protocol::ThresholdProtocol::needs_paillier_primes));
    /// others ignore them.
    pub async fn generate_key(
        &self,
        protocol: Protocol,
        key_id: KeyId,
        committee: Committee,
        eid: ExecutionId,
        primes: Option<PaillierPrimes>,
    ) -> Result<KeyShare> {
        protocol
            .implementation()
            .keygen(self, key_id, committee, eid, primes)
            .await
    }

    /// Aux-info generation for `committee` (Paillier keys with their ZK proofs, all
    /// verified; none is skipped).
    pub async fn aux_info(
        &self,
        committee: &Committee,
        eid: ExecutionId,
        primes: PaillierPrimes,
    ) -> Result<AuxInfo> {
        let i = committee.require_index(&self.node_id())?;
        let mut rng = self.run_rng(&eid);
        let (delivery, liveness) = self.delivery(&eid, committee.members())?;
        let party = MpcParty::connected(delivery);
        if !self.aux_info_delay.is_zero() {
            tokio::time::sleep(self.aux_info_delay).await;
        }
        let aux = off_executor(
            liveness.track(
                cggmp21::aux_info_gen(
                    cggmp21::ExecutionId::new(eid.as_bytes()),
                    i,
                    committee.n(),
                    primes.0,
                )
                .start(&mut rng, party),
            ),
        )
        .await?
        .map_err(|e| classify_error(ProtocolKind::AuxInfo, committee.members(), e))?;
        Ok(AuxInfo(aux))
    }

    /// Checks a signer set against a share; returns the signers' keygen indices and the
    /// local signer's position.
    fn signer_indices(
        share: &KeyShare,
        signers: &[NodeId],
        local: NodeId,
    ) -> Result<(Vec<u16>, u16)> {
        let t = usize::from(share.committee.threshold());
        if signers.len() != t {
            return Err(TssError::WrongSignerCount {
                expected: t,
                got: signers.len(),
            });
        }
        let indices = signers
            .iter()
            .map(|s| share.committee.require_index(s))
            .collect::<Result<Vec<_>>>()?;
        let distinct: HashSet<_> = indices.iter().collect();
        if distinct.len() != indices.len() {
            return Err(TssError::InvalidParticipants(
                "signers must be distinct".into(),
            ));
        }
        let me = signers
            .iter()
            .position(|s| *s == local)
            .ok_or(TssError::NotACommitteeMember(local))?;
        Ok((indices, me as u16))
    }

    /// Generates a presignature with `signers` (exactly the threshold, same order at every
    /// signer) and keeps it in this node's memory under the id `eid`.
    pub async fn presign(
        &self,
        share: &KeyShare,
        signers: &[NodeId],
        eid: ExecutionId,
    ) -> Result<ExecutionId> {
        let inner_share = share.cggmp21("presignatures")?;
        let (indices, i) = Self::signer_indices(share, signers, self.node_id())?;
        let mut rng = self.run_rng(&eid);
        let (delivery, liveness) = self.delivery(&eid, signers)?;
        let party = MpcParty::connected(delivery);
        let inner = off_executor(
            liveness.track(
                cggmp21::signing(
                    cggmp21::ExecutionId::new(eid.as_bytes()),
                    i,
                    &indices,
                    inner_share,
                )
                .generate_presignature(&mut rng, party),
            ),
        )
        .await?
        .map_err(|e| classify_error(ProtocolKind::Presign, signers, e))?;
        let presignature = Presignature {
            id: eid,
            key_id: share.key_id.clone(),
            generation: share.generation,
            signers: signers.to_vec(),
            public_key: share.public_key(),
            inner,
        };
        let mut store = self.presignatures.lock();
        store.ready.insert(eid, presignature);
        Ok(eid)
    }

    /// What unused presignature `id` was made for: its key, key generation and signers
    /// (in protocol order); `None` if this node does not hold it (unknown, used or
    /// discarded).
    pub fn presignature_info(&self, id: &ExecutionId) -> Option<(KeyId, Generation, Vec<NodeId>)> {
        let store = self.presignatures.lock();
        store
            .ready
            .get(id)
            .map(|p| (p.key_id.clone(), p.generation, p.signers.clone()))
    }

    /// Makes presignature `id` unusable (removes it, remembers it as used); a no-op for
    /// an id this node does not hold.
    pub fn burn_presignature(&self, id: &ExecutionId) {
        let mut store = self.presignatures.lock();
        if store.ready.remove(id).is_some() {
            store.mark_used(*id);
        }
    }

    /// Number of unused presignatures held for `key_id`.
    pub fn presignatures_ready(&self, key_id: &KeyId) -> usize {
        let store = self.presignatures.lock();
        store.ready.values().filter(|p| &p.key_id == key_id).count()
    }

    fn take_presignature(&self, id: ExecutionId, key_id: &KeyId) -> Result<Presignature> {
        let mut store = self.presignatures.lock();
        if store.used.contains(&id) {
            return Err(TssError::PresignatureAlreadyUsed(id));
        }
        let presig = store
            .ready
            .remove(&id)
            .ok_or(TssError::UnknownPresignature(id))?;
        // Marked used before anything else happens: even a failed signing burns it.
        store.mark_used(id);
        if &presig.key_id != key_id {
            return Err(TssError::PresignatureKeyMismatch {
                expected: presig.key_id,
                got: key_id.clone(),
            });
        }
        Ok(presig)
    }

    /// Drops every presignature made with shares of `key_id` of generation `up_to` or
    /// older (done after a reshare: they belong to retired shares).
    pub fn discard_presignatures(&self, key_id: &KeyId, up_to: Generation) {
        let mut store = self.presignatures.lock();
        let ids: Vec<ExecutionId> = store
            .ready
            .iter()
            .filter(|(_, p)| &p.key_id == key_id && p.generation <= up_to)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            store.ready.remove(&id);
            store.mark_used(id);
        }
    }

    /// One-round online signing of `message` with presignature `presignature`: every
    /// signer of that presignature runs this with the same message bytes. The signed
    /// digest is `keccak256(message)`, computed here; verify or recover the result
    /// against [`keccak256`]`(message)`. The presignature is consumed; a second use
    /// fails with [`TssError::PresignatureAlreadyUsed`].
    ///
    /// `message` is what Ethereum hashes, as this node has seen and checked it:
    /// - an EIP-1559 transaction: `0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas,
    ///   max_fee_per_gas, gas_limit, to, value, data, access_list])` (the unsigned fields);
    ///   its keccak256 is the transaction's signing hash;
    /// - an L2 batch: the batch encoding the node validated, whose keccak256 the L1
    ///   contract checks.
    ///
    /// There is deliberately no variant taking a digest (RUSTSEC-2025-0127, see the
    /// [module docs](self)): with a presignature, whoever chooses a raw digest knowing the
    /// nonce point can turn the signature into one on a message of their choice. Passing
    /// a digest's 32 bytes as `message` is safe but signs `keccak256(digest)`, which is
    /// not what an Ethereum verifier of `digest` checks.
    pub async fn sign_with_presignature(
        &self,
        key_id: &KeyId,
        presignature: ExecutionId,
        message: &[u8],
    ) -> Result<EthSignature> {
        let presig = self.take_presignature(presignature, key_id)?;
        // The digest is computed here from bytes this node holds, never taken from a
        // caller (cggmp24 makes the same rule a type: `DataToSign::digest`).
        let digest = keccak256(message);
        let data = DataToSign::from_scalar(Scalar::<Curve>::from_be_bytes_mod_order(digest));
        let partial = presig.inner.issue_partial_signature(data);
        let mut channel = self.open(&presig.id.sub("online"), &presig.signers)?;
        channel.send(
            Destination::Broadcast,
            encode_message(&partial).map_err(|e| TssError::ProtocolAborted {
                protocol: ProtocolKind::OnlineSign,
                culprits: Vec::new(),
                reason: e.to_string(),
            })?,
        )?;
        let mut partials = HashMap::new();
        partials.insert(self.node_id(), partial);
        while partials.len() < presig.signers.len() {
            let msg = channel.recv().await.map_err(|e| match e {
                transport::TransportError::Timeout { silent, .. } => TssError::Timeout {
                    protocol: ProtocolKind::OnlineSign,
                    silent,
                },
                other => TssError::Transport(other),
            })?;
            let theirs: cggmp21::PartialSignature<Curve> =
                decode_message(msg.from, &msg.payload).map_err(|e| TssError::MalformedMessage {
                    protocol: ProtocolKind::OnlineSign,
                    from: msg.from,
                    reason: e.to_string(),
                })?;
            if partials.contains_key(&msg.from) {
                return Err(TssError::Misbehaviour {
                    protocol: ProtocolKind::OnlineSign,
                    culprits: vec![msg.from],
                    reason: "sent two partial signatures".into(),
                    evidence: Vec::new(),
                });
            }
            partials.insert(msg.from, theirs);
        }
        let all: Vec<_> = partials.into_values().collect();
        let sig = cggmp21::PartialSignature::combine(&all).ok_or(TssError::InvalidSignature)?;
        to_eth(sig, &digest, &presig.public_key)
    }

    /// Full interactive signing of a 32-byte `digest` with the share's protocol
    /// ([`KeyShare::protocol`]; for CGGMP21 presign + online in one run): every signer
    /// runs this with the same digest, `signers` (exactly the threshold, the same list at
    /// every signer) and `eid`.
    ///
    /// Taking a digest is safe here, unlike with a presignature (RUSTSEC-2025-0127, see
    /// the [module docs](self)): the digest is each signer's input before the protocol
    /// starts, and the nonce point `R` is only generated during the run, so no party can
    /// choose the digest knowing `R`. The advisory concerns presignatures only. Still,
    /// sign only digests whose message this node has checked (e.g. `keccak256` of a
    /// validated batch): a signature is a commitment to whatever the digest stands for.
    pub async fn sign(
        &self,
        share: &KeyShare,
        signers: &[NodeId],
        digest: [u8; 32],
        eid: ExecutionId,
    ) -> Result<EthSignature> {
        share
            .protocol()
            .implementation()
            .sign(self, share, signers, digest, eid)
            .await
    }

    /// [`TssNode::sign`] of a CGGMP21 share.
    pub(crate) async fn cggmp21_sign(
        &self,
        share: &KeyShare,
        signers: &[NodeId],
        digest: [u8; 32],
        eid: ExecutionId,
    ) -> Result<EthSignature> {
        let inner_share = share.cggmp21("signing")?;
        let (indices, i) = Self::signer_indices(share, signers, self.node_id())?;
        let mut rng = self.run_rng(&eid);
        let (delivery, liveness) = self.delivery(&eid, signers)?;
        let party = MpcParty::connected(delivery);
        let data = DataToSign::from_scalar(Scalar::<Curve>::from_be_bytes_mod_order(digest));
        let sig = off_executor(
            liveness.track(
                cggmp21::signing(
                    cggmp21::ExecutionId::new(eid.as_bytes()),
                    i,
                    &indices,
                    inner_share,
                )
                .sign(&mut rng, party, data),
            ),
        )
        .await?
        .map_err(|e| classify_error(ProtocolKind::Sign, signers, e))?;
        to_eth(sig, &digest, &share.public_key())
    }
}

/// How often a computing party sends a heartbeat on a protocol session: a sixth of the
/// idle timeout (so a few may be late or lost), at most every 10 ms and at least every
/// 20 s (a party that has not opened the session yet holds them as early messages).
pub(crate) fn protocol_heartbeat_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 6).clamp(Duration::from_millis(10), Duration::from_secs(20))
}

/// Runs a CPU-heavy protocol future so that it does not starve the async executor (the
/// transport's network tasks in particular): on a multi-threaded tokio runtime the current
/// worker hands its other tasks over and drives the protocol itself, each poll waiting for
/// a core at the process's [`ComputeGate`](crate::compute) (so at most one computing
/// thread per core competes with the executor's workers); elsewhere it is simply awaited.
/// A run cancelled through [`crate::cancel`] (the pool layer's abort) stops at its next
/// await point with [`TssError::Cancelled`].
async fn off_executor<F: std::future::Future>(fut: Tracked<F>) -> Result<F::Output> {
    let token = crate::cancel::current();
    let handle = tokio::runtime::Handle::try_current()
        .ok()
        .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    // Blocking at the gate is only allowed on a thread of its own.
    // A poll waiting there when the run is cancelled gives up without computing; the
    // `select!` below then sees the token.
    let fut = match handle {
        Some(_) => fut.gated(token.clone()),
        None => fut,
    };
    // On the heap: CGGMP21's protocol futures are large, and `block_on` below would put
    // this one on the (worker or test) thread's stack, next to the frames polling it.
    let run = Box::pin(async move {
        match token {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => None,
                out = fut => Some(out),
            },
            None => Some(fut.await),
        }
    });
    let out = match handle {
        Some(handle) => tokio::task::block_in_place(|| handle.block_on(run)),
        None => run.await,
    };
    out.ok_or(TssError::Cancelled)
}

fn to_eth(
    sig: cggmp21::Signature<Curve>,
    digest: &[u8; 32],
    key: &VerifyingKey,
) -> Result<EthSignature> {
    let mut rs = [0u8; 64];
    sig.write_to_slice(&mut rs);
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&rs[..32]);
    s.copy_from_slice(&rs[32..]);
    EthSignature::from_rs(r, s, digest, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> ExecutionId {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
        ExecutionId::from_bytes(bytes)
    }

    #[test]
    fn used_presignature_ids_are_remembered_up_to_a_bound() {
        let mut store = PresignatureStore::default();
        for i in 0..=USED_PRESIGNATURES_REMEMBERED {
            store.mark_used(id(i));
        }
        store.mark_used(id(USED_PRESIGNATURES_REMEMBERED)); // again: no double entry
        assert_eq!(store.used.len(), USED_PRESIGNATURES_REMEMBERED);
        assert_eq!(store.used_order.len(), USED_PRESIGNATURES_REMEMBERED);
        assert!(!store.used.contains(&id(0)), "the oldest is forgotten");
        assert!(store.used.contains(&id(1)));
        assert!(store.used.contains(&id(USED_PRESIGNATURES_REMEMBERED)));
    }
}
