"""Pure GBCS codec: bytes in, typed frames out, and back.

No asyncio, no logging set-up, no clock, no environment; never imports ``gateway``.
"""

from __future__ import annotations

from .codes import (
    ActivationResponseCode,
    AlertCode,
    CraFlag,
    MessageCode,
    RemotePartyRole,
    message_code_name,
)
from .errors import (
    BadCertificate,
    BadField,
    BadLength,
    BadPayload,
    BadSignatureField,
    BadTag,
    BadTime,
    EncodeError,
    GbcsError,
    GbcsReason,
    TrailingBytes,
    TruncatedFrame,
)
from .frame import (
    Frame,
    GroupingHeader,
    MacHeader,
    decode_frame,
    encode_frame,
    encode_grouping_header,
    sign_bytes,
)
from .payloads import (
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ExecutionOutcome,
    FutureDatedActivationAlert,
    OpaquePayload,
    Payload,
    PowerRestorationAlert,
    decode_payload,
    encode_payload,
)
from .times import CANCELLATION_TIME, DlmsDateTime, is_cancellation_time
from .trust import (
    SignatureStatus,
    TrustedSigner,
    TrustStore,
    Verification,
    format_eui64,
    signer_from_certificate,
    verify_frame,
    verify_signature,
)

__all__ = [
    "CANCELLATION_TIME",
    "ActivateFirmwareCommand",
    "ActivateFirmwareResponse",
    "ActivationResponseCode",
    "AlertCode",
    "BadCertificate",
    "BadField",
    "BadLength",
    "BadPayload",
    "BadSignatureField",
    "BadTag",
    "BadTime",
    "CraFlag",
    "DlmsDateTime",
    "EncodeError",
    "ExecutionOutcome",
    "Frame",
    "FutureDatedActivationAlert",
    "GbcsError",
    "GbcsReason",
    "GroupingHeader",
    "MacHeader",
    "MessageCode",
    "OpaquePayload",
    "Payload",
    "PowerRestorationAlert",
    "RemotePartyRole",
    "SignatureStatus",
    "TrailingBytes",
    "TruncatedFrame",
    "TrustStore",
    "TrustedSigner",
    "Verification",
    "decode_frame",
    "decode_payload",
    "encode_frame",
    "encode_grouping_header",
    "encode_payload",
    "format_eui64",
    "is_cancellation_time",
    "message_code_name",
    "sign_bytes",
    "signer_from_certificate",
    "verify_frame",
    "verify_signature",
]
