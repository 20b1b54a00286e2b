//! Two agents on one machine stand in for two Docker nodes: hosts are placed on both, each node's
//! objects carry its own name, and deleting the hosts empties both nodes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::time::Duration;

use cloud_cli_proxy_tests::hosts::{ACTION_LIMIT, CREATE_LIMIT};
use cloud_cli_proxy_tests::node::Cleanup;
use cloud_cli_proxy_tests::{AgentOptions, AgentProcess, Node, docker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_machine_share_the_work() {
    let mut node = Node::standalone(&[]).await;
    let second_name = format!("{}b", node.name);
    // Declared before the agent so it runs after the agent process is gone.
    let _second_cleanup = Cleanup::new(&second_name);
    let second_state = tempfile::Builder::new().prefix("ccp-agent-").tempdir().unwrap();

    // One task at a time per agent: while the first agent builds one host, only the second can
    // take the next, so both nodes get a host.
    node.kill_agent();
    let mut first = node.agent_options();
    first.env.push(("AGENT_MAX_TASKS".into(), "1".into()));
    node.agent = Some(AgentProcess::start(&first));
    let second = AgentOptions {
        node_name: second_name.clone(),
        state_dir: second_state.path().to_path_buf(),
        ..first.clone()
    };
    let _second_agent = AgentProcess::start(&second);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = node.admin.get("/v1/admin/dashboard/stats").await;
        let stats = r.expect(200);
        if stats["agents"]["connected"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both agents never connected: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let user = node.user("dora").await;
    let a = node.create_host(&user).await;
    let b = node.create_host(&user).await;
    node.task_succeeded(&a.task_id, CREATE_LIMIT, "create on the first free node")
        .await;
    node.task_succeeded(&b.task_id, CREATE_LIMIT, "create on the other node")
        .await;

    let host_a = node.host(&a.id).await;
    let host_b = node.host(&b.id).await;
    assert_eq!(host_a["status"], "running", "{host_a}");
    assert_eq!(host_b["status"], "running", "{host_b}");
    assert_ne!(
        host_a["node_id"], host_b["node_id"],
        "both hosts landed on one node: {host_a} {host_b}"
    );

    // Each host's containers carry the name of the node that built them, and they run.
    let mut names = Vec::new();
    for host in [&a, &b] {
        let objects = docker::labelled(docker::HOST_ID, &host.id).await;
        let on_first = objects
            .iter()
            .any(|o| o.contains(&format!("ccp-{}-host-{}", node.name, host.short_id)));
        let on_second = objects
            .iter()
            .any(|o| o.contains(&format!("ccp-{second_name}-host-{}", host.short_id)));
        assert!(
            on_first ^ on_second,
            "host {} should be on exactly one node: {objects:?}",
            host.id
        );
        names.push(if on_first {
            node.name.clone()
        } else {
            second_name.clone()
        });
    }
    assert_ne!(names[0], names[1], "hosts on {names:?}");

    for host in [&a, &b] {
        let r = node.admin.delete(&format!("/v1/admin/hosts/{}", host.id)).await;
        r.expect(202);
    }
    for host in [&a, &b] {
        node.host_gone(&host.id, ACTION_LIMIT).await;
        assert!(
            node.leftovers(&host.id).await.is_empty(),
            "left after delete: {:?}",
            node.leftovers(&host.id).await
        );
    }
    for name in [&node.name, &second_name] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = docker::labelled(docker::NODE, name).await;
            if left.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {name} still holds {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
