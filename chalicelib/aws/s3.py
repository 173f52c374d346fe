"""The S3 adapter of the artifact store: presigned browser-style uploads and bounded downloads.

Bundles never pass through the API (API Gateway caps a body at 10 MB): a client POSTs straight to S3 with a
presigned policy whose ``content-length-range`` makes S3 itself refuse an oversized upload. A download is
bounded again on our side, in case an object got in some other way.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any, NoReturn

from botocore.exceptions import ClientError

from chalicelib.aws.outage import translates_outages
from chalicelib.core.clock import utc_text
from chalicelib.core.errors import NotFound, TooLarge
from chalicelib.core.keys import check_key, check_prefix
from chalicelib.core.ports import ListedObject, ObjectInfo, PresignedUpload

S3Client = Any
"""A low-level ``boto3.client("s3")``; typed ``Any`` because boto3 ships no stubs."""

CHUNK = 1024 * 1024
PAGE = 1000
"""The most keys ``list_objects_v2`` answers per call."""
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


@translates_outages
class S3ArtifactStore:
    def __init__(self, bucket: str, client: S3Client) -> None:
        self.bucket = bucket
        self.client = client

    def presign_upload(self, key: str, *, max_bytes: int, expires_in: int) -> PresignedUpload:
        """A POST policy for exactly ``key`` and 1..``max_bytes`` bytes (boto adds the bucket and key)."""
        post = self.client.generate_presigned_post(
            Bucket=self.bucket,
            Key=check_key(key),
            Conditions=[["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_in,
        )
        fields = {str(k): str(v) for k, v in post["fields"].items()}
        return PresignedUpload(
            url=str(post["url"]), fields=fields, key=key, max_bytes=max_bytes, expires_in=expires_in
        )

    def put(self, key: str, data: bytes) -> ObjectInfo:
        response = self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data)
        return ObjectInfo(key=key, size_bytes=len(data), etag=_etag(response))

    def upload(self, key: str, source: Path) -> ObjectInfo:
        """One streamed PUT (S3 takes up to 5 GB in one); the body is read from the file, never held."""
        with source.open("rb") as body:
            response = self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=body)
        return ObjectInfo(key=key, size_bytes=source.stat().st_size, etag=_etag(response))

    def presign_download(self, key: str, *, expires_in: int) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=expires_in
            )
        )

    def presign_put(self, key: str, *, expires_in: int) -> str:
        return str(
            self.client.generate_presigned_url(
                "put_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=expires_in
            )
        )

    def head(self, key: str) -> ObjectInfo:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as err:
            self._raise(err, key)
        return ObjectInfo(key=key, size_bytes=int(response["ContentLength"]), etag=_etag(response))

    def download(self, key: str, dest: Path, *, max_bytes: int) -> ObjectInfo:
        """Stream in 1 MiB chunks; stop (and remove ``dest``) as soon as more than ``max_bytes`` arrived."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as err:
            self._raise(err, key)
        body = response["Body"]
        size = int(response.get("ContentLength", 0))
        try:
            if size > max_bytes:
                raise _too_large(key, max_bytes)
            received = 0
            with dest.open("wb") as out:
                for chunk in body.iter_chunks(CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise _too_large(key, max_bytes)
                    out.write(chunk)
        except BaseException:  # never leave a partial file behind, whatever stopped the stream
            dest.unlink(missing_ok=True)
            raise
        finally:
            body.close()
        return ObjectInfo(key=key, size_bytes=received, etag=_etag(response))

    def list_objects(self, prefix: str, *, limit: int) -> list[ListedObject]:
        """``list_objects_v2`` page by page, each asking only for what is still missing, so ``limit`` keys
        cost ``ceil(limit / 1000)`` calls at most."""
        found: list[ListedObject] = []
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": check_prefix(prefix)}
        while len(found) < limit:
            try:
                page = self.client.list_objects_v2(**request, MaxKeys=min(PAGE, limit - len(found)))
            except ClientError as err:
                self._raise(err, prefix)
            for item in page.get("Contents", []):
                found.append(
                    ListedObject(
                        key=str(item["Key"]),
                        size_bytes=int(item["Size"]),
                        etag=_etag(item),
                        last_modified=utc_text(item["LastModified"].astimezone(UTC)),
                    )
                )
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
        return found[: max(limit, 0)]

    def _raise(self, err: Any, key: str) -> NoReturn:
        if str(err.response.get("Error", {}).get("Code", "")) in _MISSING:
            raise NotFound(f"object {key} does not exist in bucket {self.bucket}") from err
        raise err


def _etag(response: Any) -> str:
    """The bare hex ETag: S3 quotes it, the ports don't."""
    return str(response.get("ETag", "")).strip('"')


def _too_large(key: str, max_bytes: int) -> TooLarge:
    return TooLarge(f"object {key} is larger than the limit of {max_bytes} bytes")
