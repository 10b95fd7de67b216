//! The machine gitops-run runs on: its clock, boot time and boot id, machine id and
//! host name, the processes of an earlier pass, and the reboot command. Every read
//! of `/proc` or `/etc` happens here, so the deciders get plain values.

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use std::path::Path;

pub mod signals;

/// What the reboot review and the recovery of an interrupted pass need to know
/// about the machine, read once at the start of a pass.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The kernel's boot time, or why it could not be read.
    pub boot_time: Result<DateTime<Utc>, String>,
    pub boot_id: Option<String>,
    pub machine_id: String,
}

impl Facts {
    pub fn gather() -> Facts {
        Facts {
            boot_time: boot_time(),
            boot_id: boot_id(),
            machine_id: machine_id(),
        }
    }
}

/// The kernel's boot time, from the `btime` line of /proc/stat.
pub fn boot_time() -> Result<DateTime<Utc>, String> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("failed to read /proc/stat: {e}"))?;
    parse_btime(&stat)
}

pub fn parse_btime(stat: &str) -> Result<DateTime<Utc>, String> {
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or("no btime line in /proc/stat")?;
    Utc.timestamp_opt(secs, 0)
        .single()
        .ok_or_else(|| "btime out of range".to_string())
}

/// The kernel's id of this boot (a container manager may give each container boot
/// its own).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The machine id (systemd's /etc/machine-id, or D-Bus's copy), else the host name.
pub fn machine_id() -> String {
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(id) = std::fs::read_to_string(p) {
            if !id.trim().is_empty() {
                return id.trim().to_string();
            }
        }
    }
    hostname()
}

/// The host name as the kernel reports it.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Who runs this command, for the record of an operator's act: the user behind
/// `sudo` when there is one, else the name of the effective uid.
pub fn invoking_user() -> String {
    if let Some(u) = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

/// Start time of a process in clock ticks after boot (field 22 of /proc/PID/stat).
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// SIGKILL every process descended from this one (found in /proc by parent pid):
/// the ssh or git-upload-pack a stuck fetch waits for, also when gix starts it
/// through `sh -c`, which makes it a grandchild.
pub fn kill_children() {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let parents: Vec<(i32, i32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(|pid| parent_of(pid).map(|parent| (pid, parent)))
        .collect();
    let mut family = vec![me];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    for pid in family.into_iter().skip(1) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Shut down (not close: the descriptors stay valid) every TCP connection of this
/// process, so reads blocked on them return. Only the fetch has any at that point.
pub fn shut_down_inet_sockets() {
    use nix::sys::socket::{
        getsockname, shutdown, AddressFamily, Shutdown, SockaddrLike, SockaddrStorage,
    };
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        let inet = getsockname::<SockaddrStorage>(fd)
            .ok()
            .and_then(|a| a.family())
            .is_some_and(|f| matches!(f, AddressFamily::Inet | AddressFamily::Inet6));
        if inet {
            let _ = shutdown(fd, Shutdown::Both);
        }
    }
}

/// `systemctl reboot` where systemd is the running init, `reboot` elsewhere.
pub fn default_reboot_command() -> String {
    if Path::new("/run/systemd/system").is_dir() {
        "systemctl reboot".into()
    } else {
        "reboot".into()
    }
}

/// Run the reboot command with `/bin/sh -c`, for at most `limit`. From here on
/// SIGTERM ends the pass with exit 0: a shutting-down system stops the unit that way.
pub fn run_reboot_command(command: &str, limit: std::time::Duration) -> Result<()> {
    use std::os::unix::process::CommandExt;
    crate::log::info!("running reboot command: {command}");
    signals::exit_cleanly_on_term();
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("failed to start {command:?}"))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("failed to wait for {command:?}"))?
        {
            if !status.success() {
                anyhow::bail!("{command:?} exited with {status}");
            }
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            anyhow::bail!(
                "{command:?} did not return within {}s and was killed",
                limit.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btime_is_read_from_proc_stat_text() {
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1795291035\nprocesses 5\n"),
            Ok(Utc.timestamp_opt(1_795_291_035, 0).unwrap())
        );
        assert!(parse_btime("cpu 1\n").is_err());
        assert!(boot_time().is_ok(), "this machine has /proc/stat");
    }

    #[test]
    fn reads_own_start_ticks() {
        let me = std::process::id() as i32;
        assert!(process_start_ticks(me).is_some());
        assert_eq!(process_start_ticks(me), process_start_ticks(me));
    }
}
