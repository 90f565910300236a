//! Printing a cluster map as an indented tree, as `ceph osd tree` does.

use std::fmt::Write;

use crate::map::{ClusterMap, WEIGHT_ONE};

impl ClusterMap {
    /// The map as a table with one row per bucket and disk, children
    /// indented under their parent. Bucket ids are negative, as in CRUSH.
    pub fn render_tree(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>6}  {:<24} {:<10} {:>10}  STATUS",
            "ID", "NAME", "TYPE", "WEIGHT"
        );
        for (index, bucket) in self.buckets.iter().enumerate() {
            if bucket.parent.is_none() {
                self.render_bucket(index, 0, &mut out);
            }
        }
        out
    }

    fn render_bucket(&self, index: usize, depth: usize, out: &mut String) {
        let bucket = &self.buckets[index];
        let _ = writeln!(
            out,
            "{:>6}  {:<24} {:<10} {:>10.3}",
            -(index as i64) - 1,
            format!("{}{}", "  ".repeat(depth), bucket.name),
            self.type_name(bucket.type_index),
            bucket.weight as f64 / f64::from(WEIGHT_ONE),
        );
        for &disk in &bucket.child_disks {
            let d = &self.disks[disk];
            let _ = writeln!(
                out,
                "{:>6}  {:<24} {:<10} {:>10.3}  {} {}",
                d.id.0,
                format!("{}{}", "  ".repeat(depth + 1), d.name),
                self.type_name(0),
                f64::from(d.weight) / f64::from(WEIGHT_ONE),
                if d.up { "up" } else { "down" },
                if d.is_in { "in" } else { "out" },
            );
        }
        for &child in &bucket.child_buckets {
            self.render_bucket(child, depth + 1, out);
        }
    }
}
