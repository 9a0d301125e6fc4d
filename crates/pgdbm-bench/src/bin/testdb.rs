//! How long it takes to get an isolated, migrated database for one test (see `testdb.rs`).
//!
//! ```sh
//! cargo run --release -p pgdbm-bench --bin testdb [-- --rounds N]
//! ```

#[path = "../testdb.rs"]
mod testdb;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let ways = testdb::measure(rounds).await;
    println!(
        "isolated, migrated database for one test ({}-file migration set, {rounds} rounds, medians)",
        testdb::FILES
    );
    println!(
        "{:<34} {:>12} {:>12} {:>14} {:>10}",
        "way", "create ms", "range ms", "cleanup ms", "speed-up"
    );
    let fresh = ways[0].create.as_secs_f64();
    for w in &ways {
        println!(
            "{:<34} {:>12.1} {:>5.0}..{:<6.0} {:>14.1} {:>9.1}x",
            w.name,
            w.create.as_secs_f64() * 1e3,
            w.fastest.as_secs_f64() * 1e3,
            w.slowest.as_secs_f64() * 1e3,
            w.cleanup.as_secs_f64() * 1e3,
            fresh / w.create.as_secs_f64()
        );
    }
}
