//! ringress-loadtest: an open-loop HTTP/1.1 load generator for loopback targets.
//!
//! Owns: sending requests at a constant arrival rate (each request has a scheduled send
//! time fixed before the run starts), measuring latency from that *scheduled* time, and
//! reporting HDR-histogram percentiles. A stalled server therefore shows up as latency
//! instead of silently slowing the generator down (no coordinated omission, unlike
//! closed-loop tools such as wrk).
//! Must never: send traffic anywhere but loopback (127.0.0.0/8, ::1, localhost).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

mod http;
use http::{connect, Conn};

/// Longest run accepted, soak included: the tool is always bounded in time.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// One OS thread per connection: keep the count sane.
const MAX_CONNECTIONS: usize = 4096;
/// Highest latency the histograms track, in microseconds (values above are clamped).
const MAX_TRACKED_US: u64 = 3_600_000_000;
/// How often soak mode prints a progress line.
const SOAK_REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "ringress-loadtest",
    version,
    about = "Open-loop HTTP/1.1 keep-alive load generator for loopback targets"
)]
struct Args {
    /// Target URL: http:// only; host must be 127.0.0.0/8, [::1] or localhost.
    #[arg(long)]
    url: String,
    /// Host header to send (default: the URL's authority).
    #[arg(long)]
    host_header: Option<String>,
    /// Target arrival rate in requests per second, all connections together.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long to send, e.g. 500ms, 10s, 5m, 2h (at most 24h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent connections (one thread each); each has rate/connections req/s.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Churn: close every connection after --requests-per-connection requests and
    /// open a new one, continuously.
    #[arg(long)]
    soak: bool,
    /// In --soak mode, requests sent on a connection before it is closed.
    #[arg(long, default_value_t = 1)]
    requests_per_connection: u64,
    /// Timeout for each connect, write and read.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringress-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where to connect and what to send.
struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

/// Everything a connection thread needs to know, fixed before the run starts.
struct Plan {
    addr: SocketAddr,
    request: Vec<u8>,
    start: Instant,
    end: Instant,
    /// Past this instant, requests still waiting to be sent are abandoned.
    hard_stop: Instant,
    rate: u64,
    connections: u64,
    soak: bool,
    requests_per_connection: u64,
    timeout: Duration,
}

/// Shared counters, read only by the soak progress printer.
#[derive(Default)]
struct Progress {
    completed: AtomicU64,
    failed: AtomicU64,
    connects: AtomicU64,
}

/// One connection thread's results, merged at the end.
struct Stats {
    latency_us: Histogram<u64>,
    send_lag_us: Histogram<u64>,
    sent: u64,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    unsent: u64,
    connects: u64,
    first_error: Option<String>,
}

impl Stats {
    fn new() -> Result<Self, String> {
        let hist = || {
            Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_US, 3)
                .map_err(|e| format!("histogram: {e}"))
        };
        Ok(Self {
            latency_us: hist()?,
            send_lag_us: hist()?,
            sent: 0,
            ok: 0,
            non_2xx: 0,
            errors: 0,
            unsent: 0,
            connects: 0,
            first_error: None,
        })
    }

    fn merge(&mut self, other: &Stats) -> Result<(), String> {
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| format!("histogram merge: {e:?}"))?;
        self.send_lag_us
            .add(&other.send_lag_us)
            .map_err(|e| format!("histogram merge: {e:?}"))?;
        self.sent += other.sent;
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.unsent += other.unsent;
        self.connects += other.connects;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        Ok(())
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let target = parse_target(&args.url)?;
    if args.rate == 0 {
        return Err("--rate must be at least 1".into());
    }
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        return Err(format!("--connections must be 1..={MAX_CONNECTIONS}"));
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        return Err("--duration must be between 1ms and 24h".into());
    }
    if args.requests_per_connection == 0 {
        return Err("--requests-per-connection must be at least 1".into());
    }
    let host = args.host_header.as_deref().unwrap_or(&target.authority);
    if !is_header_safe(host) {
        return Err("--host-header must be visible ASCII without spaces".into());
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringress-loadtest\r\n\r\n",
        target.path
    )
    .into_bytes();

    // Keep-alive mode connects every connection before the clock starts, so connection
    // setup is not part of the measured latencies. Soak mode connects inside the loop.
    let mut pre_connected = Vec::with_capacity(args.connections);
    if !args.soak {
        for _ in 0..args.connections {
            pre_connected
                .push(Some(connect(target.addr, args.timeout).map_err(|e| {
                    format!("cannot connect to {}: {e}", target.addr)
                })?));
        }
    } else {
        pre_connected.resize_with(args.connections, || None);
    }

    // Small head start so every thread is sleeping on its first slot when it arrives.
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + args.duration;
    let plan = Arc::new(Plan {
        addr: target.addr,
        request,
        start,
        end,
        hard_stop: end + args.timeout,
        rate: args.rate,
        connections: args.connections as u64,
        soak: args.soak,
        requests_per_connection: args.requests_per_connection,
        timeout: args.timeout,
    });
    let progress = Arc::new(Progress::default());

    let mut handles = Vec::with_capacity(args.connections);
    for (index, stream) in pre_connected.into_iter().enumerate() {
        let plan = Arc::clone(&plan);
        let progress = Arc::clone(&progress);
        let handle = thread::Builder::new()
            .name(format!("conn-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || connection_loop(&plan, &progress, index as u64, stream))
            .map_err(|e| format!("spawning connection thread: {e}"))?;
        handles.push(handle);
    }

    let done = Arc::new(AtomicBool::new(false));
    let printer = if args.soak {
        let done = Arc::clone(&done);
        let progress = Arc::clone(&progress);
        Some(thread::spawn(move || {
            soak_progress(start, &done, &progress)
        }))
    } else {
        None
    };

    let mut total = Stats::new()?;
    for handle in handles {
        let stats = handle
            .join()
            .map_err(|_| "a connection thread panicked".to_string())??;
        total.merge(&stats)?;
    }
    done.store(true, Ordering::Relaxed);
    if let Some(printer) = printer {
        let _ = printer.join();
    }
    let elapsed = start.elapsed();

    print_report(args, host, &target, &total, elapsed);
    let failed = total.errors + total.non_2xx + total.unsent;
    Ok(if total.ok == 0 || failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One connection's schedule: its k-th request is due at
/// `start + (index + k * connections) / rate`, which spreads all connections' requests
/// evenly over time at the global rate.
fn connection_loop(
    plan: &Plan,
    progress: &Progress,
    index: u64,
    mut conn: Option<Conn>,
) -> Result<Stats, String> {
    set_timer_slack();
    let mut stats = Stats::new()?;
    if conn.is_some() {
        stats.connects += 1;
    }
    let mut on_this_conn = 0u64;
    for k in 0u64.. {
        let seq = u128::from(index) + u128::from(k) * u128::from(plan.connections);
        let offset_ns = seq * 1_000_000_000 / u128::from(plan.rate);
        let due = plan.start + Duration::from_nanos(u64::try_from(offset_ns).unwrap_or(u64::MAX));
        if due >= plan.end {
            break;
        }
        let now = Instant::now();
        if now >= plan.hard_stop {
            // Behind schedule at the end: count what was never sent instead of hiding it.
            let remaining = (plan.end - due).as_nanos() * u128::from(plan.rate)
                / 1_000_000_000
                / u128::from(plan.connections);
            stats.unsent += 1 + u64::try_from(remaining).unwrap_or(u64::MAX);
            break;
        }
        if due > now {
            thread::sleep(due - now);
        }
        let send_at = Instant::now();
        record(
            &mut stats.send_lag_us,
            send_at.saturating_duration_since(due),
        );
        stats.sent += 1;

        if conn.is_none() {
            match connect(plan.addr, plan.timeout) {
                Ok(c) => {
                    stats.connects += 1;
                    progress.connects.fetch_add(1, Ordering::Relaxed);
                    on_this_conn = 0;
                    conn = Some(c);
                }
                Err(e) => {
                    stats.error(format_args!("connect: {e}"));
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        match c.exchange(&plan.request) {
            Ok(reply) => {
                // Latency counts from when the request was due, not when it went out.
                record(
                    &mut stats.latency_us,
                    Instant::now().saturating_duration_since(due),
                );
                if (200..300).contains(&reply.status) {
                    stats.ok += 1;
                    progress.completed.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.non_2xx += 1;
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
                on_this_conn += 1;
                let churn = plan.soak && on_this_conn >= plan.requests_per_connection;
                if !reply.reusable || churn {
                    conn = None;
                }
            }
            Err(e) => {
                stats.error(format_args!("request: {e}"));
                progress.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
    Ok(stats)
}

fn record(hist: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.clamp(1, MAX_TRACKED_US));
}

/// Lower this thread's timer slack from the default 50 µs to 1 µs: sleep overshoot
/// would otherwise be added to every measured latency on a loopback target.
fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and only affects the calling
    // thread; no pointers are passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

fn soak_progress(start: Instant, done: &AtomicBool, progress: &Progress) {
    let mut next = start + SOAK_REPORT_EVERY;
    while !done.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(200));
        if Instant::now() < next {
            continue;
        }
        next += SOAK_REPORT_EVERY;
        eprintln!(
            "[{:>6.0}s] completed {} failed {} connections opened {}",
            start.elapsed().as_secs_f64(),
            progress.completed.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
            progress.connects.load(Ordering::Relaxed),
        );
    }
}

fn print_report(args: &Args, host: &str, target: &Target, s: &Stats, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let completed = s.ok + s.non_2xx;
    let mode = if args.soak {
        format!(
            "soak (new connection every {} request(s))",
            args.requests_per_connection
        )
    } else {
        "keep-alive".to_string()
    };
    println!(
        "target       http://{}{} (Host: {host})",
        target.addr, target.path
    );
    println!(
        "load         open-loop {} req/s for {:?}, {} connections, {mode}",
        args.rate, args.duration, args.connections
    );
    println!(
        "requests     {} sent, {completed} completed ({:.1}/s), {} 2xx, {} non-2xx, {} errors, {} never sent",
        s.sent,
        completed as f64 / secs,
        s.ok,
        s.non_2xx,
        s.errors,
        s.unsent
    );
    println!("connections  {} opened", s.connects);
    print_percentiles("latency", &s.latency_us);
    print_percentiles("send lag", &s.send_lag_us);
    println!("(latency counts from each request's scheduled time; send lag is how late requests");
    println!(" went out: waiting for the previous response on the same connection, or the");
    println!(" generator itself falling behind; a large send-lag p50 means the generator is short of CPU)");
    if let Some(e) = &s.first_error {
        println!("first error  {e}");
    }
}

fn print_percentiles(name: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        println!("{name:<12} no samples");
        return;
    }
    println!(
        "{name:<12} p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

// ---------------------------------------------------------------------------------
// Target parsing
// ---------------------------------------------------------------------------------

fn parse_target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err("URLs with user info are not supported".into());
    }
    if !is_header_safe(&path) {
        return Err("the URL path must be visible ASCII without spaces".into());
    }
    let (host, port) = split_host_port(authority)?;
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>()
            .map_err(|_| format!("{host:?} is not localhost or a loopback IP address"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "refusing non-loopback target {ip}: only 127.0.0.0/8, ::1 and localhost are allowed"
        ));
    }
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        authority: authority.to_string(),
        path,
    })
}

fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
    let bad_port = |p: &str| format!("bad port {p:?}");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in URL")?;
        let port = match after {
            "" => 80,
            _ => {
                let p = after.strip_prefix(':').ok_or("junk after ']' in URL")?;
                p.parse().map_err(|_| bad_port(p))?
            }
        };
        return Ok((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Ok((host, p.parse().map_err(|_| bad_port(p))?)),
        None => Ok((authority, 80)),
    }
}

fn is_header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: bad number"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_loopback_targets() {
        assert!(parse_target("http://127.0.0.1:8080/x").is_ok());
        assert!(parse_target("http://127.1.2.3/").is_ok());
        assert!(parse_target("http://[::1]:9000").is_ok());
        assert!(parse_target("http://LOCALHOST:81/a?b").is_ok());
        assert!(parse_target("http://10.0.0.1/").is_err());
        assert!(parse_target("http://example.com/").is_err());
        assert!(parse_target("http://[::ffff:8.8.8.8]/").is_err());
        assert!(parse_target("https://127.0.0.1/").is_err());
        assert!(parse_target("http://u@127.0.0.1/").is_err());
    }

    #[test]
    fn target_path_defaults_to_slash() {
        let t = parse_target("http://127.0.0.1:81?q=1").expect("valid");
        assert_eq!(t.path, "/?q=1");
        assert_eq!(t.addr.port(), 81);
        let t = parse_target("http://localhost").expect("valid");
        assert_eq!(t.path, "/");
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
    }
}
