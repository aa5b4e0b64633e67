//! Deleting a namespace in a cluster: before its data goes, every live node stops serving it,
//! lets its objects finish what they were doing, forgets their alarms and closes their sockets.
//! Otherwise an object still awake on another node could commit after the delete and bring back
//! part of the namespace's data, and its sockets would stay open.

use super::Cluster;
use super::forward::{CLIENT, SECRET_HEADER};
use futures::future::join_all;
use std::time::Duration;

/// Where a node asks another to stop serving a namespace (`POST`, with the cluster's secret).
pub const FORGET_PATH: &str = "/_cluster/namespaces/{namespace}/forget";

/// How long a node is given to settle its objects of a namespace: the 30 s the deleting node
/// gives its own, and a little for the request.
const SETTLE_ELSEWHERE: Duration = Duration::from_secs(35);

impl Cluster {
    /// Asks every other live node to stop serving `namespace` and settle its objects there;
    /// `Err` names the nodes that did not, and why.
    pub async fn forget_elsewhere(&self, namespace: &str) -> Result<(), String> {
        let others: Vec<String> = {
            let view = self.view.read().unwrap();
            view.nodes
                .iter()
                .filter(|(name, _)| ***name != *self.config.node)
                .map(|(_, url)| url.clone())
                .collect()
        };
        let path = FORGET_PATH.replace("{namespace}", namespace);
        let path = &path;
        let asked = others.iter().map(|url| async move {
            let answer = CLIENT
                .post(format!("{}{path}", url.trim_end_matches('/')))
                .header(SECRET_HEADER, &self.config.secret)
                .timeout(SETTLE_ELSEWHERE)
                .send()
                .await;
            match answer {
                Ok(a) if a.status().is_success() => Ok(()),
                Ok(a) => {
                    let status = a.status();
                    let body = a.text().await.unwrap_or_default();
                    Err(format!("{url} answered {status}: {body}"))
                }
                Err(e) => Err(format!("{url} did not answer: {e}")),
            }
        });
        let failed: Vec<String> = join_all(asked)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}
