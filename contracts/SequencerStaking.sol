// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// @title SequencerStaking
/// @notice L1 lock contract of an MPC sequencer pool. Whitelisted L1 accounts lock ETH to join the
///         pool as sequencers; each sequencer is identified in the pool by its `nodeId`, the 32-byte
///         ed25519 public key of its transport identity. The contract also records the pool's MPC
///         addresses: Ethereum addresses controlled jointly by the pool (threshold ECDSA), one per
///         L1 *role*. A role is a bytes32 name, by convention keccak256 of a short string:
///         `BATCHES_ROLE` = keccak256("batches") for batch submission, e.g. keccak256("state") for
///         state commitments. Each role has its own `BatchInbox`, which accepts appends only from
///         `roleAddress(role)`; `mpcAddress()` is the batches role's address.
/// @dev    Relations kept by the contract:
///         - an account has at most one nodeId and a nodeId belongs to at most one account;
///         - a locked sequencer's stake is always within [minStake, maxStake];
///         - `sequencers()` lists exactly the locked sequencers (order is not stable: removal swaps
///           the last entry into the freed slot, so readers should sort, e.g. by nodeId);
///         - a role has at most one address and an address serves at most one role:
///           `roleOf[roleAddress[r]] == r` for every role r with a non-zero address, and
///           `roleAddress[roleOf[a]] == a` for every address a with a non-zero role.
///         The whitelist gates entry (`lock`) and top-ups (`increase`); removing an account from the
///         whitelist does not evict it, it can still `unlock`. Rewards and slashing are not
///         implemented: `slash` is an admin-only stub that reverts with `NotImplemented()`.
contract SequencerStaking {
    /// @notice One locked sequencer, as returned by the list views.
    /// @param nodeId  ed25519 transport public key of the sequencer (32 bytes).
    /// @param account L1 account that locked the stake and receives it back on `unlock`.
    /// @param stake   Locked amount in wei.
    struct Sequencer {
        bytes32 nodeId;
        address account;
        uint256 stake;
    }

    /// @notice Account that deployed the contract; manages the whitelist and the role addresses.
    address public immutable admin;
    /// @notice Smallest stake (wei) a sequencer may hold.
    uint256 public immutable minStake;
    /// @notice Largest stake (wei) a sequencer may hold.
    uint256 public immutable maxStake;

    /// @notice Role of the pool's batch-submission key: keccak256("batches"). `mpcAddress()` and
    ///         `setMpcAddress` read and write this role's address.
    bytes32 public constant BATCHES_ROLE = keccak256("batches");

    /// @notice Sum of all locked stakes (wei).
    uint256 public totalStake;

    /// @notice Whether `account` may lock (and top up) a stake.
    mapping(address account => bool) public isWhitelisted;
    /// @notice nodeId locked by `account`, zero if none.
    mapping(address account => bytes32) public nodeIdOf;
    /// @notice Account that locked `nodeId`, zero if none.
    mapping(bytes32 nodeId => address) public accountOf;
    /// @notice Stake (wei) locked by `account`, zero if none.
    mapping(address account => uint256) public stakeOf;
    /// @notice The pool's MPC-controlled Ethereum address registered for `role` (the only sender the
    ///         role's `BatchInbox` accepts), zero if none (until the admin sets it).
    mapping(bytes32 role => address) public roleAddress;
    /// @notice The role `account` is registered for, zero if none. An address serves at most one
    ///         role at a time.
    mapping(address account => bytes32) public roleOf;

    /// @dev Locked accounts, for enumeration; `_position[a]` is a's index in `_accounts` plus one.
    address[] private _accounts;
    mapping(address account => uint256) private _position;

    /// @notice The admin added (`allowed` = true) or removed `account` from the whitelist.
    event WhitelistUpdated(address indexed account, bool allowed);
    /// @notice `account` joined the pool as `nodeId` with a stake of `amount` wei.
    event Locked(address indexed account, bytes32 indexed nodeId, uint256 amount);
    /// @notice `account` (as `nodeId`) added `amount` wei; its stake is now `newStake`.
    event StakeIncreased(address indexed account, bytes32 indexed nodeId, uint256 amount, uint256 newStake);
    /// @notice `account` (as `nodeId`) left the pool; `amount` wei were sent back to it.
    event Unlocked(address indexed account, bytes32 indexed nodeId, uint256 amount);
    /// @notice The admin set the pool's MPC address for `role` from `previous` (zero if none) to
    ///         `current`; `previous` no longer has a role (unless it equals `current`). Emitted by
    ///         `setRoleAddress` and by `setMpcAddress` (with `role` = `BATCHES_ROLE`).
    event RoleAddressSet(bytes32 indexed role, address indexed previous, address indexed current);

    /// @notice The caller is not the admin.
    error NotAdmin(address caller);
    /// @notice `account` is not on the whitelist.
    error NotWhitelisted(address account);
    /// @notice The stake `amount` would be below `minimum`.
    error StakeBelowMinimum(uint256 amount, uint256 minimum);
    /// @notice The stake `amount` would be above `maximum`.
    error StakeAboveMaximum(uint256 amount, uint256 maximum);
    /// @notice `account` already has a locked stake (under `nodeId`).
    error AlreadyLocked(address account, bytes32 nodeId);
    /// @notice `nodeId` is already used by `account`.
    error NodeIdTaken(bytes32 nodeId, address account);
    /// @notice A zero nodeId was given.
    error ZeroNodeId();
    /// @notice `account` has no locked stake.
    error NotLocked(address account);
    /// @notice A call that must carry ETH carried none.
    error ZeroAmount();
    /// @notice A zero address was given where an account is required.
    error ZeroAddress();
    /// @notice A zero role was given.
    error ZeroRole();
    /// @notice `account` is already registered for `role` (its current role), so it cannot be
    ///         registered for another role; move `role` to another address first.
    error AddressHasRole(address account, bytes32 role);
    /// @notice Constructor bounds are inconsistent (`minimum` zero or above `maximum`).
    error InvalidStakeBounds(uint256 minimum, uint256 maximum);
    /// @notice Sending `amount` wei back to `to` failed.
    error TransferFailed(address to, uint256 amount);
    /// @notice The function is a seam for later work (slashing) and does nothing yet.
    error NotImplemented();

    modifier onlyAdmin() {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        _;
    }

    /// @param minStake_ Smallest allowed stake in wei (must be non-zero).
    /// @param maxStake_ Largest allowed stake in wei (must be >= `minStake_`).
    constructor(uint256 minStake_, uint256 maxStake_) {
        if (minStake_ == 0 || minStake_ > maxStake_) revert InvalidStakeBounds(minStake_, maxStake_);
        admin = msg.sender;
        minStake = minStake_;
        maxStake = maxStake_;
    }

    // ------------------------------------------------------------------ admin

    /// @notice Add (`allowed` = true) or remove `account` from the whitelist.
    /// @dev Removal does not evict a locked sequencer; it only blocks `lock` and `increase`.
    function setWhitelisted(address account, bool allowed) external onlyAdmin {
        if (account == address(0)) revert ZeroAddress();
        isWhitelisted[account] = allowed;
        emit WhitelistUpdated(account, allowed);
    }

    /// @notice Register `account`, one of the pool's MPC addresses, for `role`: the role's
    ///         `BatchInbox` then accepts appends only from `account`. Emits `RoleAddressSet`.
    /// @dev Can be called again at any time by the admin, e.g. to recover from a lost pool key
    ///      (a fresh key generation yields a new address); takes effect for the next append. The
    ///      role's previous address loses its role and may be registered for another one.
    ///      Re-registering an address for the role it already has is allowed (and emits the event).
    ///      Reverts `ZeroRole()` if `role` is zero, `ZeroAddress()` if `account` is zero, and
    ///      `AddressHasRole(account, roleOf[account])` if `account` serves another role.
    /// @param role    Role name, non-zero (by convention keccak256 of a short string).
    /// @param account The pool's MPC address for the role, non-zero.
    function setRoleAddress(bytes32 role, address account) external onlyAdmin {
        _setRoleAddress(role, account);
    }

    /// @notice Set the pool's batch-submission MPC address: same as
    ///         `setRoleAddress(BATCHES_ROLE, newMpcAddress)` (emits `RoleAddressSet`).
    function setMpcAddress(address newMpcAddress) external onlyAdmin {
        _setRoleAddress(BATCHES_ROLE, newMpcAddress);
    }

    /// @notice Seam for slashing a misbehaving sequencer. Not implemented: always reverts with
    ///         `NotImplemented()` (after the admin check, so the ABI and access rule are fixed now).
    /// @dev A later version decides where slashed funds go, how misbehaviour is proven, and emits
    ///      a `Slashed` event; the stake bounds and list invariants above must keep holding.
    function slash(address account, uint256 amount) external view onlyAdmin {
        account;
        amount;
        revert NotImplemented();
    }

    // ------------------------------------------------------------- sequencers

    /// @notice Join the pool: lock `msg.value` wei as the stake of the caller under `nodeId`.
    /// @param nodeId The caller's ed25519 transport public key (non-zero, not used by anyone).
    function lock(bytes32 nodeId) external payable {
        if (!isWhitelisted[msg.sender]) revert NotWhitelisted(msg.sender);
        if (nodeId == bytes32(0)) revert ZeroNodeId();
        bytes32 current = nodeIdOf[msg.sender];
        if (current != bytes32(0)) revert AlreadyLocked(msg.sender, current);
        address holder = accountOf[nodeId];
        if (holder != address(0)) revert NodeIdTaken(nodeId, holder);
        _checkBounds(msg.value);

        nodeIdOf[msg.sender] = nodeId;
        accountOf[nodeId] = msg.sender;
        stakeOf[msg.sender] = msg.value;
        totalStake += msg.value;
        _accounts.push(msg.sender);
        _position[msg.sender] = _accounts.length;
        emit Locked(msg.sender, nodeId, msg.value);
    }

    /// @notice Add `msg.value` wei to the caller's stake (the total must stay <= `maxStake`).
    function increase() external payable {
        if (!isWhitelisted[msg.sender]) revert NotWhitelisted(msg.sender);
        bytes32 nodeId = nodeIdOf[msg.sender];
        if (nodeId == bytes32(0)) revert NotLocked(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        uint256 newStake = stakeOf[msg.sender] + msg.value;
        if (newStake > maxStake) revert StakeAboveMaximum(newStake, maxStake);

        stakeOf[msg.sender] = newStake;
        totalStake += msg.value;
        emit StakeIncreased(msg.sender, nodeId, msg.value, newStake);
    }

    /// @notice Leave the pool: remove the caller's sequencer entry and send its whole stake back.
    function unlock() external {
        bytes32 nodeId = nodeIdOf[msg.sender];
        if (nodeId == bytes32(0)) revert NotLocked(msg.sender);
        uint256 amount = stakeOf[msg.sender];

        // Effects before the transfer (no re-entrancy window on this entry).
        delete nodeIdOf[msg.sender];
        delete accountOf[nodeId];
        delete stakeOf[msg.sender];
        totalStake -= amount;
        _removeAccount(msg.sender);
        emit Unlocked(msg.sender, nodeId, amount);

        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice The pool's batch-submission MPC address: `roleAddress(BATCHES_ROLE)` (zero until set).
    function mpcAddress() external view returns (address) {
        return roleAddress[BATCHES_ROLE];
    }

    /// @notice Number of locked sequencers.
    function sequencerCount() external view returns (uint256) {
        return _accounts.length;
    }

    /// @notice The locked sequencer at `index` (0 <= index < `sequencerCount()`); order not stable.
    function sequencerAt(uint256 index) external view returns (Sequencer memory) {
        return _sequencer(_accounts[index]);
    }

    /// @notice All locked sequencers (order not stable across `unlock`).
    function sequencers() external view returns (Sequencer[] memory list) {
        uint256 n = _accounts.length;
        list = new Sequencer[](n);
        for (uint256 i = 0; i < n; ++i) {
            list[i] = _sequencer(_accounts[i]);
        }
    }

    /// @notice Whether `account` currently has a locked stake.
    function isSequencer(address account) external view returns (bool) {
        return _position[account] != 0;
    }

    // --------------------------------------------------------------- internal

    function _setRoleAddress(bytes32 role, address account) private {
        if (role == bytes32(0)) revert ZeroRole();
        if (account == address(0)) revert ZeroAddress();
        bytes32 held = roleOf[account];
        if (held != bytes32(0) && held != role) revert AddressHasRole(account, held);

        address previous = roleAddress[role];
        if (previous != address(0)) delete roleOf[previous];
        roleAddress[role] = account;
        roleOf[account] = role;
        emit RoleAddressSet(role, previous, account);
    }

    function _checkBounds(uint256 amount) private view {
        if (amount < minStake) revert StakeBelowMinimum(amount, minStake);
        if (amount > maxStake) revert StakeAboveMaximum(amount, maxStake);
    }

    function _sequencer(address account) private view returns (Sequencer memory) {
        return Sequencer({nodeId: nodeIdOf[account], account: account, stake: stakeOf[account]});
    }

    function _removeAccount(address account) private {
        uint256 index = _position[account] - 1;
        uint256 last = _accounts.length - 1;
        if (index != last) {
            address moved = _accounts[last];
            _accounts[index] = moved;
            _position[moved] = index + 1;
        }
        _accounts.pop();
        delete _position[account];
    }
}
