#![allow(clippy::unwrap_used, clippy::expect_used)]
use tools::stack::backing::PrivateBacking;
#[tokio::test]
async fn smoke() {
    let dir = std::env::temp_dir().join("ticketing-scratch-backing");
    let t = std::time::Instant::now();
    let mut b = PrivateBacking::start(&dir).await.unwrap();
    println!("started in {:?}: {} {} {}", t.elapsed(), b.redis.url(), b.nats.url(), b.postgres.url("ticketing"));
    let t = std::time::Instant::now();
    b.postgres.kill().await.unwrap();
    println!("pg killed {:?}", t.elapsed());
    b.postgres.restart().await.unwrap();
    println!("pg restarted {:?}", t.elapsed());
    b.redis.kill(); b.redis.restart().await.unwrap();
    b.nats.kill(); b.nats.restart().await.unwrap();
    println!("all restarted {:?}", t.elapsed());
    let db = sea_orm::Database::connect(b.postgres.url("ticketing")).await.unwrap();
    db.close().await.unwrap();
    b.remove().await;
}
