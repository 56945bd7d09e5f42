//! A process's random identity: what tells one node's flush batches and
//! cluster messages from another's, and from its own before a restart.

/// A random 64-bit id. Without randomness it falls back to the time and
/// the process id, which still differ between processes started apart.
pub fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (now.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}
