//! A bare reverse proxy on actix-web and awc: every request goes to the upstream
//! with its method, path, headers and body, and the answer comes back with its
//! status, headers and body. Both bodies are collected, as the router collects
//! them. One worker, `TCP_NODELAY` on accepted sockets, jemalloc.
//!
//! ```text
//! bench-actix-proxy PORT http://HOST:PORT
//! ```

use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

async fn forward(
    req: HttpRequest,
    body: web::Bytes,
    client: web::Data<awc::Client>,
    upstream: web::Data<String>,
) -> HttpResponse {
    let url = format!("{}{}", upstream.get_ref(), req.uri().path());
    let mut answer = match client.request_from(url, req.head()).send_body(body).await {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let mut out = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "connection" {
            out.insert_header((name.clone(), value.clone()));
        }
    }
    match answer.body().await {
        Ok(body) => out.body(body),
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(upstream)) = (args.next(), args.next()) else {
        return Err(std::io::Error::other(
            "usage: bench-actix-proxy PORT http://HOST:PORT",
        ));
    };
    let port: u16 = port.parse().map_err(std::io::Error::other)?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let client = awc::Client::builder()
                .connector(awc::Connector::new().limit(0))
                .finish();
            App::new()
                .app_data(web::Data::new(client))
                .app_data(web::Data::new(upstream.clone()))
                .default_service(web::to(forward))
        })
        .workers(1)
        .on_connect(|conn, _| {
            if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
