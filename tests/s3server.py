"""A real S3-protocol server on loopback for tests and benches: moto's standalone server in a subprocess.

With ``auth=True`` the server checks signatures (moto's IAM emulation): it creates one IAM user with full S3 access
and hands out its access key; requests signed with anything else are refused, as on AWS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

from schemas.procs import die_with_parent_preexec

_ADMIN_ACTIONS = 3  # create_user, put_user_policy, create_access_key: the unauthenticated set-up calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, *, auth: bool = True):
        self.auth = auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = self.secret = "unused"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "MotoServer":
        env = {**os.environ}
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_ADMIN_ACTIONS)
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent_preexec(os.getpid(), new_session=False))
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"moto server did not start on {self.url}")
                time.sleep(0.1)
        if self.auth:
            iam = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1",
                               aws_access_key_id="setup", aws_secret_access_key="setup")
            iam.create_user(UserName="emoforge")
            iam.put_user_policy(UserName="emoforge", PolicyName="s3", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
            k = iam.create_access_key(UserName="emoforge")["AccessKey"]
            self.key, self.secret = k["AccessKeyId"], k["SecretAccessKey"]
        return self

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
