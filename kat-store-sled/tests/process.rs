//! Process-wide settings the store recommends to the binaries that embed it.

#[cfg(target_os = "linux")]
fn thp_enabled() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
        .expect("the kernel reports THP_enabled")
}

#[cfg(target_os = "linux")]
#[test]
fn transparent_huge_pages_are_turned_off_for_the_process() {
    kat_store_sled::disable_transparent_huge_pages().expect("prctl");
    assert_eq!(thp_enabled(), "0", "the kernel still allows huge pages");
    // Calling it again is harmless.
    kat_store_sled::disable_transparent_huge_pages().expect("prctl again");
    assert_eq!(thp_enabled(), "0");
}
