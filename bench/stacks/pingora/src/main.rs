//! A bare reverse proxy on pingora: `ProxyHttp` with nothing but `upstream_peer`,
//! which hands out a clone of one peer built at start-up. One thread, no work
//! stealing, jemalloc.
//!
//! ```text
//! bench-pingora-proxy PORT HOST:PORT
//! ```

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Floor {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bench-pingora-proxy PORT HOST:PORT".into());
    };
    let port: u16 = port.parse()?;
    let conf = ServerConf::from_yaml("---\nversion: 1\nthreads: 1\nwork_stealing: false\n")?;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        peer: HttpPeer::new(upstream.as_str(), false, String::new()),
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, floor);
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    server.run_forever()
}
