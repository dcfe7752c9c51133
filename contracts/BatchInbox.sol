// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// @notice The part of `SequencerStaking` that `BatchInbox` reads.
interface IRoleAddressSource {
    /// @notice The pool's current MPC-controlled Ethereum address registered for `role` (zero if none).
    function roleAddress(bytes32 role) external view returns (address);
}

/// @title BatchInbox
/// @notice L1 inbox of one role of the pool: the rollup's L2 batches (role `BATCHES_ROLE` =
///         keccak256("batches") of `SequencerStaking`), or e.g. state commitments (keccak256("state")).
///         Only the pool's MPC address currently registered for the inbox's `role` (read from the
///         staking contract on every call, so a key rotation by the admin takes effect at once) may
///         append, and the appended L2 block ranges must form one gap-free, overlap-free sequence
///         starting at `genesisBlock`: batch k covers [firstBlock, lastBlock] and batch k+1 starts at
///         lastBlock + 1. Each role has its own inbox (its own sequence); "batch" below means one
///         append, whatever the role commits to.
/// @dev    A batch is committed by its hash (`batchHash`, e.g. keccak256 of the encoded batch data)
///         rather than by its data: calldata cost stays constant and the contract does not depend on
///         a batch encoding. Posting the data itself (calldata or EIP-4844 blobs) is a later seam.
///         Epochs (the pool's signing-committee epoch) may repeat but never go backwards.
contract BatchInbox {
    /// @notice One appended batch.
    /// @param epoch      Pool epoch (signing committee) that signed the batch transaction.
    /// @param firstBlock First L2 block of the batch.
    /// @param lastBlock  Last L2 block of the batch (>= firstBlock).
    /// @param batchHash  Commitment to the batch data.
    struct Batch {
        uint64 epoch;
        uint64 firstBlock;
        uint64 lastBlock;
        bytes32 batchHash;
    }

    /// @notice The staking contract whose `roleAddress(role)` is the only accepted sender.
    IRoleAddressSource public immutable staking;
    /// @notice The role this inbox serves (non-zero), e.g. keccak256("batches") or keccak256("state").
    bytes32 public immutable role;
    /// @notice L2 block the first batch must start at.
    uint64 public immutable genesisBlock;

    /// @notice L2 block the next batch must start at (`genesisBlock` before the first batch).
    uint64 public nextBlock;
    /// @notice Epoch of the last appended batch (0 before the first batch; see `batchCount()`).
    uint64 public lastEpoch;

    Batch[] private _batches;

    /// @notice A batch covering L2 blocks [firstBlock, lastBlock] was appended by the pool in `epoch`.
    /// @dev The batch's index is its position among all `BatchAppended` logs (and `batchCount() - 1`
    ///      right after the append).
    event BatchAppended(uint64 indexed epoch, uint64 firstBlock, uint64 lastBlock, bytes32 batchHash);

    /// @notice `caller` is not the pool's current MPC address for `role` (the inbox's role).
    error NotRoleAddress(address caller, bytes32 role);
    /// @notice The batch starts at `firstBlock` but `expected` is the next L2 block: blocks are missing.
    error BlockRangeGap(uint64 expected, uint64 firstBlock);
    /// @notice The batch starts at `firstBlock`, before `expected`: it repeats already appended blocks.
    error BlockRangeOverlap(uint64 expected, uint64 firstBlock);
    /// @notice `lastBlock` is before `firstBlock`, or is the largest uint64 (no next block).
    error InvalidBlockRange(uint64 firstBlock, uint64 lastBlock);
    /// @notice `epoch` is lower than the epoch of the last appended batch.
    error EpochRegression(uint64 epoch, uint64 lastEpoch);
    /// @notice A zero batch hash was given.
    error ZeroBatchHash();
    /// @notice A zero address was given for the staking contract.
    error ZeroAddress();
    /// @notice A zero role was given.
    error ZeroRole();

    /// @param staking_      Address of the `SequencerStaking` contract (non-zero).
    /// @param role_         Role whose registered address may append (non-zero), e.g.
    ///                      keccak256("batches") (`SequencerStaking.BATCHES_ROLE`).
    /// @param genesisBlock_ L2 block the first batch must start at.
    constructor(address staking_, bytes32 role_, uint64 genesisBlock_) {
        if (staking_ == address(0)) revert ZeroAddress();
        if (role_ == bytes32(0)) revert ZeroRole();
        staking = IRoleAddressSource(staking_);
        role = role_;
        genesisBlock = genesisBlock_;
        nextBlock = genesisBlock_;
    }

    /// @notice Append the batch of L2 blocks [firstBlock, lastBlock], signed by the pool in `epoch`.
    /// @dev Only the staking contract's current `roleAddress(role)` may call. Checks, in order:
    ///      sender, range shape, continuity (gap, then overlap), epoch, hash.
    function appendBatch(uint64 epoch, uint64 firstBlock, uint64 lastBlock, bytes32 batchHash) external {
        if (msg.sender != staking.roleAddress(role)) revert NotRoleAddress(msg.sender, role);
        if (lastBlock < firstBlock || lastBlock == type(uint64).max) {
            revert InvalidBlockRange(firstBlock, lastBlock);
        }
        uint64 expected = nextBlock;
        if (firstBlock > expected) revert BlockRangeGap(expected, firstBlock);
        if (firstBlock < expected) revert BlockRangeOverlap(expected, firstBlock);
        uint64 previousEpoch = lastEpoch;
        if (epoch < previousEpoch) revert EpochRegression(epoch, previousEpoch);
        if (batchHash == bytes32(0)) revert ZeroBatchHash();

        _batches.push(Batch({epoch: epoch, firstBlock: firstBlock, lastBlock: lastBlock, batchHash: batchHash}));
        nextBlock = lastBlock + 1;
        lastEpoch = epoch;
        emit BatchAppended(epoch, firstBlock, lastBlock, batchHash);
    }

    /// @notice Number of appended batches.
    function batchCount() external view returns (uint256) {
        return _batches.length;
    }

    /// @notice The appended batch at `index` (0 <= index < `batchCount()`).
    function batchAt(uint256 index) external view returns (Batch memory) {
        return _batches[index];
    }

    /// @notice The last appended batch; reverts (index out of bounds) if there is none.
    function lastBatch() external view returns (Batch memory) {
        return _batches[_batches.length - 1];
    }
}
