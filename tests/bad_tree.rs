//! A device tree that is wrong for ioguard ends the run with a clear message and a failure
//! status, well within the timeout. Each tree is QEMU's own, dumped and then broken in one
//! way with dtoolkit (QEMU itself refuses a blob that is not a tree at all, and rewrites
//! /chosen, /memory and /psci of the tree it is given).

mod common;
use common::*;
use dtoolkit::fdt::Fdt;
use dtoolkit::model::DeviceTree;
use ioguard_runner::{dump_dtb, runner_dir, Options};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn qemu_tree() -> DeviceTree {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = runner_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("virt-{}-{n}.dtb", std::process::id()));
    dump_dtb(&Options::default(), &path).expect("dumpdtb");
    let blob = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    DeviceTree::from_fdt(&Fdt::new(&blob).expect("QEMU's tree parses"))
}

/// Boots with `tree` and returns what the guest printed. The runner puts the semihosting
/// console on the serial line, so a guest without a UART still reports on that stream.
fn boot_with(tree: &DeviceTree, name: &str) -> (i32, String, Duration) {
    let path = runner_dir().join(format!("bad-{name}-{}.dtb", std::process::id()));
    std::fs::write(&path, tree.to_dtb()).unwrap();
    let out = run(&["--timeout", "20", "--", "-dtb", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(!out.timed_out, "{name}: timed out\n{}", out.transcript());
    assert!(
        out.stderr.is_empty(),
        "{name}: QEMU complained: {:?}",
        out.stderr
    );
    let all = out.report.lines.join("\n");
    (out.status, all, out.elapsed)
}

fn expect_fatal(tree: &DeviceTree, name: &str, message: &str) {
    let (status, all, elapsed) = boot_with(tree, name);
    assert_eq!(status, 2, "{name}: status {status}\n{all}");
    assert!(
        all.contains("ioguard: fatal:"),
        "{name}: no fatal line\n{all}"
    );
    assert!(all.contains(message), "{name}: expected '{message}'\n{all}");
    assert!(
        elapsed < Duration::from_secs(10),
        "{name}: took {elapsed:?}"
    );
}

#[test]
fn qemu_tree_unchanged_boots() {
    let (status, all, _) = boot_with(&qemu_tree(), "unchanged");
    assert_eq!(status, 0, "{all}");
}

#[test]
fn console_that_is_not_there() {
    let mut t = qemu_tree();
    let chosen = t.root.child_mut("chosen").expect("/chosen");
    chosen
        .property_mut("stdout-path")
        .expect("stdout-path")
        .set_value("/pl011@12340000");
    // No console: the message goes to the semihosting console and the status through
    // semihosting exit.
    expect_fatal(
        &t,
        "missing-console",
        "/chosen/stdout-path names '/pl011@12340000', which is not in the tree",
    );
}

#[test]
fn console_reg_cells_that_do_not_fit() {
    let mut t = qemu_tree();
    let uart = t.root.child_mut("pl011@9000000").expect("pl011 node");
    uart.property_mut("reg")
        .unwrap()
        .set_value([0u32, 0x0900_0000, 0]);
    expect_fatal(&t, "bad-reg", "/pl011@9000000: bad reg");
}

#[test]
fn no_console_at_all() {
    let mut t = qemu_tree();
    t.root
        .child_mut("chosen")
        .unwrap()
        .remove_property("stdout-path");
    t.root.remove_child("pl011@9000000").expect("pl011 node");
    expect_fatal(
        &t,
        "no-console",
        "no console: no /chosen/stdout-path and no UART node",
    );
}

#[test]
fn console_of_a_kind_ioguard_cannot_drive() {
    let mut t = qemu_tree();
    let uart = t.root.child_mut("pl011@9000000").unwrap();
    uart.property_mut("compatible")
        .unwrap()
        .set_value("acme,uart9000");
    expect_fatal(
        &t,
        "odd-console",
        "console /pl011@9000000 is 'acme,uart9000'",
    );
}

// QEMU rewrites /psci and the /memory nodes of a tree given with -dtb, so a missing PSCI
// node or memory node cannot reach the guest this way; the host tests of
// platform::parse cover them.

#[test]
fn console_named_through_an_alias_with_options() {
    // crosvm and Linux trees say "serial0:115200n8": the alias is resolved, the options
    // after ':' are ignored.
    let mut t = qemu_tree();
    if t.root.child_mut("aliases").is_none() {
        t.root
            .add_child(dtoolkit::model::DeviceTreeNode::new("aliases").unwrap());
    }
    let aliases = t.root.child_mut("aliases").unwrap();
    aliases.add_property(
        dtoolkit::model::DeviceTreeProperty::new("serial0", "/pl011@9000000").unwrap(),
    );
    let chosen = t.root.child_mut("chosen").unwrap();
    chosen
        .property_mut("stdout-path")
        .unwrap()
        .set_value("serial0:115200n8");
    let (status, all, _) = boot_with(&t, "alias");
    assert_eq!(status, 0, "{all}");
    assert!(
        all.contains("console /pl011@9000000 (pl011, from stdout-path)"),
        "{all}"
    );
    // The alias is really what names the console: pointed elsewhere, it is followed.
    let aliases = t.root.child_mut("aliases").unwrap();
    aliases
        .property_mut("serial0")
        .unwrap()
        .set_value("/nowhere@0");
    expect_fatal(
        &t,
        "alias-nowhere",
        "names '/nowhere@0', which is not in the tree",
    );
}

/// Boots with the console's UART moved to `base` (its node and `reg`), and returns what
/// the guest printed, on whatever console it could use.
fn console_moved_to(base: u64, name: &str) -> (i32, String, Duration) {
    let mut t = qemu_tree();
    let uart = t.root.child_mut("pl011@9000000").expect("pl011 node");
    uart.property_mut("reg")
        .unwrap()
        .set_value([(base >> 32) as u32, base as u32, 0, 0x1000]);
    boot_with(&t, name)
}

#[test]
fn console_on_flash_or_pci_space_gives_up_the_uart_and_still_reports() {
    // Flash reads back as memory (not a PL011's ID); unassigned PCI space reads all ones.
    for (base, name) in [(0x0, "flash"), (0x1000_0000, "pci-mmio")] {
        let (status, all, elapsed) = console_moved_to(base, name);
        assert!(
            elapsed < Duration::from_secs(10),
            "{name}: took {elapsed:?}"
        );
        assert_eq!(status, 1, "{name}: status {status}\n{all}");
        assert!(
            all.contains("does not answer as the UART the device tree names"),
            "{name}:\n{all}"
        );
        assert!(all.contains("FAIL: guard: console: "), "{name}:\n{all}");
        assert!(all.contains("SUMMARY: "), "{name}:\n{all}");
    }
}
