//! The result check a worker makes before each job runs, read for many jobs in one
//! request (`ResultBatchReader`): every answer is what reading that one key alone
//! gives, whatever the mix of keys, and a hostile key reads nothing of anyone else's.

use bytes::Bytes;
use jobbox::{Client, nats};
use jobbox_tests::NatsServer;

/// What reading each key alone gives.
async fn one_by_one(client: &Client, keys: &[&str]) -> Vec<Option<Bytes>> {
    let mut values = Vec::with_capacity(keys.len());
    for key in keys {
        values.push(client.result_bytes(key).await.expect("read one result"));
    }
    values
}

async fn assert_same(client: &Client, reader: &mut jobbox::ResultBatchReader, keys: &[&str]) {
    // The batch first: where direct gets were turned off, it is what finds out.
    let got = reader.read(keys).await;
    let expected = one_by_one(client, keys).await;
    assert_eq!(got.len(), keys.len());
    for ((key, got), expected) in keys.iter().zip(got).zip(expected) {
        let got = got.unwrap_or_else(|e| panic!("read {key}: {e}"));
        assert_eq!(got, expected, "result of {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_read_many_at_once_are_what_each_read_alone_gives() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let results = &client.layout().results;
    // 300 jobs: every third has a result, every 21st of those was removed again
    // (a delete marker is no result), one result is close to NATS's 1 MiB limit.
    let keys: Vec<String> = (0..300).map(|n| format!("job-{n}")).collect();
    for (n, key) in keys.iter().enumerate() {
        if n % 3 == 0 {
            let value = if n == 30 {
                Bytes::from(vec![b'x'; 900 * 1024])
            } else {
                Bytes::from(format!("result {n}"))
            };
            results.create(key, value).await.expect("store a result");
        }
        if n % 21 == 0 {
            results.delete(key).await.expect("remove a result");
        }
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut reader = client.result_batch_reader();
    for batch in [
        &keys[..1],
        &keys[..2],
        &keys[1..3],
        &keys[..jobbox::MAX_RESULT_BATCH],
        &keys[..],
        &keys[29..32],
    ] {
        assert_same(&client, &mut reader, batch).await;
    }
    // One request per read of more than one key, two for the 300 (256 + 44); the
    // single key's read is a plain get.
    assert_eq!(
        reader.batched_reads(),
        6,
        "reads answered by one request each"
    );
    // The same key twice in one request gets the same answer twice.
    assert_same(&client, &mut reader, &["job-3", "job-3", "job-4"]).await;
    // None of the keys has a result.
    assert_same(&client, &mut reader, &["job-1", "job-2", "missing"]).await;

    // Hostile keys beside valid ones: each is refused alone, before anything is
    // sent; a wildcard reads no one's result, and an overlong key (a subject past
    // the server's 4 KiB control line) does not cost the connection.
    let long = "a".repeat(10_000);
    let hostile = [
        "*",
        ">",
        "job-3.x",
        "job-*",
        "",
        "job-3 ",
        "job-\r\n3",
        long.as_str(),
    ];
    let mut mixed: Vec<&str> = hostile.to_vec();
    mixed.extend(["job-0", "job-3", "job-6", "job-7"]);
    let got = reader.read(&mixed).await;
    for (key, answer) in mixed.iter().zip(&got).take(hostile.len()) {
        assert!(answer.is_err(), "hostile key {key:?} was read: {answer:?}");
    }
    let expected = one_by_one(&client, &mixed[hostile.len()..]).await;
    for ((key, got), expected) in mixed[hostile.len()..]
        .iter()
        .zip(&got[hostile.len()..])
        .zip(expected)
    {
        assert_eq!(
            got.as_ref().expect("valid key read"),
            &expected,
            "result of {key}"
        );
    }

    // Direct gets turned off while the reader lives (the bucket given replicas on a
    // cluster: reads go to the leader): the same answers.
    let stream_name = format!("KV_{}", nats::RESULTS_BUCKET);
    let mut stream = client
        .jetstream()
        .get_stream(&stream_name)
        .await
        .expect("results stream");
    let mut config = stream.info().await.expect("stream info").config.clone();
    config.allow_direct = false;
    client
        .jetstream()
        .update_stream(config)
        .await
        .expect("turn direct gets off");
    let batched = reader.batched_reads();
    assert_same(&client, &mut reader, &keys[..40]).await;
    assert_eq!(
        reader.batched_reads(),
        batched,
        "read one by one from the leader"
    );
}
