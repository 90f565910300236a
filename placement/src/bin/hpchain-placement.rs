//! `hpchain-placement`: inspect a cluster map and where data lands on it.
//!
//! ```text
//! hpchain-placement tree MAP
//! hpchain-placement rules MAP
//! hpchain-placement place MAP RULE [--pool N] [--pg N] [--size N]
//! hpchain-placement balance MAP RULE [--size N] [--pgs N]
//! hpchain-placement object MAP RULE VOLUME_ID OBJECT_NO [--pool N] [--pg-num N] [--size N]
//! hpchain-placement demo
//! ```
//! MAP is a TOML or JSON map file (see placement/examples/cluster.toml).

use hpchain_placement::{pg_of, place, ClusterMap, DiskId, PgId};
use std::collections::BTreeMap;
use std::process::ExitCode;

const EXAMPLE: &str = include_str!("../../examples/cluster.toml");

const USAGE: &str = "usage:
  hpchain-placement tree MAP
  hpchain-placement rules MAP
  hpchain-placement place MAP RULE [--pool N] [--pg N] [--size N]
  hpchain-placement balance MAP RULE [--size N] [--pgs N]
  hpchain-placement object MAP RULE VOLUME_ID OBJECT_NO [--pool N] [--pg-num N] [--size N]
  hpchain-placement demo
MAP is a TOML or JSON cluster map (example: placement/examples/cluster.toml).";

struct Args {
    positional: Vec<String>,
    flags: BTreeMap<String, String>,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut flags = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if let Some(name) = arg.strip_prefix("--") {
            let value = it.next().ok_or(format!("--{name} needs a value"))?;
            flags.insert(name.to_string(), value);
        } else {
            positional.push(arg);
        }
    }
    Ok(Args { positional, flags })
}

impl Args {
    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.flags.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v:?} is not a valid number")),
        }
    }

    fn positional(&self, index: usize, what: &str) -> Result<&str, String> {
        self.positional
            .get(index)
            .map(String::as_str)
            .ok_or(format!("missing {what}\n{USAGE}"))
    }
}

fn load(path: &str) -> Result<ClusterMap, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read map {path}: {e}"))?;
    ClusterMap::parse(&text).map_err(|e| format!("map {path}: {e}"))
}

fn show_placement(map: &ClusterMap, disks: &[DiskId], domain: &str) -> String {
    disks
        .iter()
        .map(|&d| format!("{d} ({})", map.ancestor_of(d, domain).unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn domain_of_rule(map: &ClusterMap, rule: &str) -> String {
    map.rules()
        .find(|r| r.name == rule)
        .map(|r| r.failure_domain.clone())
        .unwrap_or_else(|| "disk".to_string())
}

fn balance(map: &ClusterMap, rule: &str, size: usize, pgs: u32) -> Result<String, String> {
    let mut counts: BTreeMap<DiskId, u64> = BTreeMap::new();
    for index in 0..pgs {
        for d in place(map, rule, PgId { pool: 1, index }, size).map_err(|e| e.to_string())? {
            *counts.entry(d).or_insert(0) += 1;
        }
    }
    let total_slots = f64::from(pgs) * size as f64;
    let in_weight: f64 = map
        .disk_ids()
        .filter(|d| counts.contains_key(d))
        .map(|d| map.disk_weight(d).unwrap_or(0.0))
        .sum();
    let mut out = format!(
        "{:<10} {:>8} {:>10} {:>10} {:>9}\n",
        "DISK", "WEIGHT", "SLOTS", "SHARE", "vs WEIGHT"
    );
    for d in map.disk_ids() {
        let weight = map.disk_weight(d).unwrap_or(0.0);
        let slots = counts.get(&d).copied().unwrap_or(0);
        let share = slots as f64 / total_slots;
        let ideal = if counts.contains_key(&d) {
            weight / in_weight
        } else {
            0.0
        };
        let vs = if ideal > 0.0 {
            format!("{:+.1}%", (share / ideal - 1.0) * 100.0)
        } else {
            "-".to_string()
        };
        out += &format!(
            "{:<10} {:>8.3} {:>10} {:>9.2}% {:>9}\n",
            d.to_string(),
            weight,
            slots,
            share * 100.0,
            vs
        );
    }
    Ok(out)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let command = args.positional(0, "command")?;
    match command {
        "tree" => print!("{}", load(args.positional(1, "MAP")?)?.render_tree()),
        "rules" => {
            for rule in load(args.positional(1, "MAP")?)?.rules() {
                println!(
                    "{}: root {}, one replica per {}, mode {:?}",
                    rule.name, rule.root, rule.failure_domain, rule.mode
                );
            }
        }
        "place" => {
            let map = load(args.positional(1, "MAP")?)?;
            let rule = args.positional(2, "RULE")?;
            let pg = PgId {
                pool: args.number("pool", 1)?,
                index: args.number("pg", 0)?,
            };
            let disks =
                place(&map, rule, pg, args.number("size", 3)?).map_err(|e| e.to_string())?;
            println!(
                "pg {pg} -> {}",
                show_placement(&map, &disks, &domain_of_rule(&map, rule))
            );
        }
        "balance" => {
            let map = load(args.positional(1, "MAP")?)?;
            let rule = args.positional(2, "RULE")?;
            print!(
                "{}",
                balance(
                    &map,
                    rule,
                    args.number("size", 3)?,
                    args.number("pgs", 100_000)?
                )?
            );
        }
        "object" => {
            let map = load(args.positional(1, "MAP")?)?;
            let rule = args.positional(2, "RULE")?;
            let volume: u64 = args
                .positional(3, "VOLUME_ID")?
                .parse()
                .map_err(|_| "VOLUME_ID must be a number")?;
            let object: u64 = args
                .positional(4, "OBJECT_NO")?
                .parse()
                .map_err(|_| "OBJECT_NO must be a number")?;
            let pg = PgId {
                pool: args.number("pool", 1)?,
                index: pg_of(volume, object, args.number("pg-num", 128)?),
            };
            let disks =
                place(&map, rule, pg, args.number("size", 3)?).map_err(|e| e.to_string())?;
            println!(
                "volume {volume} object {object} -> pg {pg} -> {}",
                show_placement(&map, &disks, &domain_of_rule(&map, rule))
            );
        }
        "demo" => {
            let map = ClusterMap::parse(EXAMPLE).map_err(|e| e.to_string())?;
            println!("Cluster map (placement/examples/cluster.toml):\n");
            print!("{}", map.render_tree());
            println!("\nBalance of 100000 PGs x 3 replicas, rule replicated-host (node-3/nvme1 is out):\n");
            print!("{}", balance(&map, "replicated-host", 3, 100_000)?);
            println!(
                "\nA host holds at most one replica of a PG, so node-4 (4.0 of 9.5 in-weight, more\n\
                 than 1/3) is capped at a third of the slots and the others take the rest."
            );
            println!(
                "\nWhere the first objects of volume 1 land (pool 1, pg_num 128, 4 MiB objects):\n"
            );
            for object in 0..8u64 {
                let pg = PgId {
                    pool: 1,
                    index: pg_of(1, object, 128),
                };
                let disks = place(&map, "replicated-host", pg, 3).map_err(|e| e.to_string())?;
                println!(
                    "  bytes {:>5} MiB.. -> pg {pg:<6} -> {}",
                    object * 4,
                    show_placement(&map, &disks, "host")
                );
            }
        }
        "help" | "--help" | "-h" => println!("{USAGE}"),
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpchain-placement: {e}");
            ExitCode::FAILURE
        }
    }
}
