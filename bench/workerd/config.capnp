# The workerd side of dohost-bench. `dohost-bench` fills in @ADDRESS@ and @STORAGE@ and writes
# this next to worker.js in a temporary directory; check `workerd.capnp` in the npm package.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .mainWorker),
    # Durable Object storage on disk: one SQLite file per object under @STORAGE@/<uniqueKey>/.
    (name = "do-storage", disk = (path = "@STORAGE@", writable = true)),
  ],
  sockets = [
    (name = "http", address = "@ADDRESS@", http = (), service = "main"),
  ],
);

const mainWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
  ],
  compatibilityDate = "2025-09-01",
  bindings = [
    (name = "COUNTER", durableObjectNamespace = "Counter"),
    (name = "CHAT", durableObjectNamespace = "ChatRoom"),
    (name = "RELAY", durableObjectNamespace = "Relay"),
    (name = "PUBSUB", durableObjectNamespace = "PubSub"),
  ],
  durableObjectNamespaces = [
    (className = "Counter", uniqueKey = "dohost-bench-counter"),
    (className = "ChatRoom", uniqueKey = "dohost-bench-chat"),
    (className = "Relay", uniqueKey = "dohost-bench-relay"),
    (className = "PubSub", uniqueKey = "dohost-bench-pubsub"),
  ],
  durableObjectStorage = (localDisk = "do-storage"),
);
