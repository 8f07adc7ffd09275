"""The same ONNX Runtime model served by LitServe with its own batching (the peer in serve_load.py).

python benchmarks/_litserve_server.py ARTIFACT PORT MAX_BATCH_SIZE BATCH_TIMEOUT_S THREADS
"""

from __future__ import annotations

import sys

import litserve as ls
import numpy as np


class MiniLMAPI(ls.LitAPI):
    def setup(self, device):
        from edgellm.export import Artifact
        from edgellm.runtime import make_runner

        self.runner = make_runner(Artifact.load(sys.argv[1]), intra_op_threads=int(sys.argv[5]))
        self.names = [s.name for s in self.runner.inputs]

    def decode_request(self, request):
        return {n: np.asarray(request[n], dtype=np.int64) for n in self.names}

    def batch(self, inputs):  # right-pad to the longest sequence, as edgellm's batcher does
        seq = max(x[self.names[0]].shape[-1] for x in inputs)
        self._lens = [x[self.names[0]].shape[-1] for x in inputs]
        return {
            n: np.concatenate([np.pad(x[n], [(0, 0), (0, seq - x[n].shape[-1])]) for x in inputs])
            for n in self.names
        }

    def predict(self, x):
        return self.runner.run(x)["sentence_embedding"]

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"embedding": np.asarray(output).reshape(-1).tolist()}


if __name__ == "__main__":
    api = MiniLMAPI(max_batch_size=int(sys.argv[3]), batch_timeout=float(sys.argv[4]))
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(port=int(sys.argv[2]), log_level="warning", generate_client_file=False)
