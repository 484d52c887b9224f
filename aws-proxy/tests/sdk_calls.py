"""Real boto3 calls through aws-proxy, for aws-proxy/tests/sdk.rs.

Usage: sdk_calls.py MODE PORT PREFIX
  MODE connect: the SDK uses the proxy as HTTPS_PROXY (CONNECT), set by the caller's environment.
  MODE sni:     the SDK connects "directly" to AWS host names, which resolve to 127.0.0.1:PORT, as
                they would through aws-proxy's DNS server in a cluster (the proxy picks the host by SNI).
PREFIX names the bucket, table and queue, so that runs do not collide.
AWS_CA_BUNDLE (set by the caller) is the proxy's CA. Prints one JSON object with what AWS answered.
"""

import json
import socket
import sys

import boto3
from botocore.config import Config

mode, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]

if mode == "sni":
    real_getaddrinfo = socket.getaddrinfo

    def via_proxy(host, service_port, *args, **kwargs):
        if isinstance(host, str) and (host.endswith(".amazonaws.com") or host == "amazonaws.com"):
            return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        return real_getaddrinfo(host, service_port, *args, **kwargs)

    socket.getaddrinfo = via_proxy

config = Config(region_name="us-east-1", retries={"max_attempts": 1}, s3={"addressing_style": "virtual"})
out = {}

s3 = boto3.client("s3", config=config)
bucket = f"{prefix}-invoices"
s3.create_bucket(Bucket=bucket)
s3.put_object(Bucket=bucket, Key="2026/11/inv-1.pdf", Body=b"%PDF-1.7 invoice one")
out["s3_body"] = s3.get_object(Bucket=bucket, Key="2026/11/inv-1.pdf")["Body"].read().decode()
out["s3_keys"] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

ddb = boto3.client("dynamodb", config=config)
table = f"{prefix}-orders"
ddb.create_table(
    TableName=table,
    KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
)
ddb.put_item(TableName=table, Item={"id": {"S": "o-1"}, "total": {"N": "42"}})
out["ddb_item"] = ddb.get_item(TableName=table, Key={"id": {"S": "o-1"}})["Item"]

sqs = boto3.client("sqs", config=config)
queue_url = sqs.create_queue(QueueName=f"{prefix}-jobs")["QueueUrl"]
sqs.send_message(QueueUrl=queue_url, MessageBody="ship order o-1")
messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=0).get("Messages", [])
out["sqs_bodies"] = [m["Body"] for m in messages]
out["sqs_queue_url"] = queue_url

sts = boto3.client("sts", config=config)
out["sts_account"] = sts.get_caller_identity()["Account"]

print(json.dumps(out))
