//! The startup log's and `--check-config`'s summary of the routes.

use super::Config;

impl Config {
    /// One human line per route, for the startup log and `--check-config`.
    pub fn route_lines(&self) -> Vec<String> {
        let spawned = self.spawn.iter().map(|r| {
            let mut extras = vec![format!("{} workers", r.workers)];
            if r.max_requests > 0 {
                extras.push(format!("max_requests {}", r.max_requests));
            }
            if r.reload {
                extras.push("reload".into());
            }
            format!(
                "spawn    {} -> {} ({})",
                r.matcher,
                r.argv.join(" "),
                extras.join(", ")
            )
        });
        let mut lines: Vec<String> = self
            .fastcgi
            .iter()
            .map(|r| {
                let addrs: Vec<String> = r.addrs.iter().map(|a| a.to_string()).collect();
                format!("FastCGI  {} -> {}", r.matcher, addrs.join(", "))
            })
            .chain(spawned)
            .collect();
        lines.extend([
            format!(
                "CGI      {}/* -> programs in {}",
                self.cgi_prefix.trim_end_matches('/'),
                self.cgi_dir.display()
            ),
            format!("static   /* -> files in {}", self.root.display()),
        ]);
        lines
    }
}
