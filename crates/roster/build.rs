// `sqlx::migrate!` embeds the migration files and `include_dir!` the dashboard
// (http/dashboard.rs) at compile time; without this a changed file there would
// not rebuild the crate (sqlx's documented build script; Cargo scans each
// directory for changes).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=dashboard");
}
