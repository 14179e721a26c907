// Texts of the capture page in English and Simplified Chinese, and the mapping from the
// service's problem codes and liveness reasons to what a person is told.
// Every key exists in both languages (tests/browser checks it).

export const LOCALES = ["en", "zh-CN"];

const en = {
  title: "Face check",
  intro: "We will check that it is really you, in front of the camera, now. It takes about {seconds} seconds.",
  introSteps: "You will be asked to:",
  tipLight: "Find good light. Avoid a bright window behind you.",
  tipFace: "Take off sunglasses, a mask or a hat.",
  tipPhone: "Hold the phone at eye level, about an arm's length away.",
  tipKiosk: "Stand in front of the screen and look at it.",
  start: "Start",
  tryAgain: "Try again",
  startAgain: "Start again",
  cancel: "Cancel",
  done: "Done",
  language: "中文",
  languageLabel: "切换到中文",
  loading: "Preparing the check…",
  cameraWaiting: "Opening the camera. If you are asked, please allow the camera.",
  positioning: "Get ready",
  capturing: "Follow the instructions",
  stepOf: "Step {n} of {total}",
  progressLabel: "Steps of the check",
  timeLeft: "{seconds} seconds left",
  checking: "Checking…",
  checkingText: "Please wait a moment.",
  passTitle: "Check complete",
  passText: "Thank you. You can now continue.",
  failTitle: "We could not confirm the check",
  failText: "Please try again. If it keeps failing, ask for help at the counter.",
  kioskWelcome: "Welcome",
  kioskStartText: "Touch Start to check your face.",
  kioskWaiting: "Please wait, the check is being prepared.",
  kioskReturning: "Returning to the start screen in {seconds} seconds.",
  // kiosk: a staff member checks a search the machine could not decide (facegate:review)
  reviewTitle: "Please wait",
  reviewPending: "A staff member is checking your photo. Please wait here.",
  reviewTime: "It usually takes no more than {minutes} minutes.",
  reviewTimeOne: "It usually takes no more than a minute.",
  reviewIdentifiedTitle: "Confirmed",
  reviewIdentified: "A staff member confirmed who you are. Please continue.",
  reviewCounterTitle: "Please go to the counter",
  reviewNone: "A staff member could not confirm who you are. Please go to the counter.",
  reviewExpired: "Nobody could check your photo in time. Please go to the counter.",
  noSessionTitle: "Nothing to check yet",
  noSessionText: "Please open this page from the app or the kiosk.",
  videoLabel: "Camera picture",
  // guidance while positioning and while acting
  guide_no_face: "Place your face inside the oval",
  guide_move_closer: "Move closer",
  guide_move_back: "Move back a little",
  guide_center: "Move your face to the middle of the oval",
  guide_one_face: "Only one face, please",
  guide_too_dark: "Too dark — please find more light",
  guide_too_bright: "Too bright — avoid strong light on or behind you",
  guide_hold_still: "Good — hold still",
  guide_keep_in_oval: "Keep your face in the oval",
  // the steps
  step_neutral: "Look straight at the camera",
  step_blink: "Blink your eyes",
  step_turn_left: "Slowly turn your head to your left, then back",
  step_turn_right: "Slowly turn your head to your right, then back",
  step_open_mouth: "Open your mouth wide, then close it",
  step_nod: "Nod your head",
  short_blink: "Blink",
  short_turn_left: "Turn your head left",
  short_turn_right: "Turn your head right",
  short_open_mouth: "Open your mouth",
  short_nod: "Nod",
  // why a check failed (liveness reasons)
  reason_action_blink: "We did not see you blink.",
  reason_action_turn_left: "We did not see you turn your head to your left.",
  reason_action_turn_right: "We did not see you turn your head to your right.",
  reason_action_open_mouth: "We did not see you open your mouth.",
  reason_action_nod: "We did not see you nod.",
  reason_motion: "We could not see a live person moving. A photo or a screen cannot be used.",
  reason_multiple_faces: "More than one face was seen. Only the person checked should be in the picture.",
  reason_face_lost: "Your face left the oval. Keep your face in the oval the whole time.",
  reason_identity_changed: "The person in the picture changed during the check.",
  reason_frame_rate: "The camera picture was too slow. Close other apps and try again.",
  reason_spoof: "The picture did not look like a live person.",
  reason_service: "The check could not be completed by the service.",
  // errors (problem codes and camera failures)
  err_camera_denied_title: "The camera is blocked",
  err_camera_denied_text: "Please allow this page to use the camera (in the browser's settings or the address bar), then press Try again.",
  err_no_camera_title: "No camera found",
  err_no_camera_text: "Connect a camera, or use a phone or tablet with a front camera.",
  err_camera_busy_title: "The camera is in use",
  err_camera_busy_text: "Close other apps that use the camera, then press Try again.",
  err_insecure_title: "The camera cannot be used here",
  err_insecure_text: "This page must be opened over a secure (https) connection.",
  err_camera_failed_title: "The camera did not start",
  err_camera_failed_text: "Press Try again. If it does not help, restart the device.",
  err_expired_title: "The time for this check has run out",
  err_expired_text: "Please start the check again.",
  err_link_title: "This link can no longer be used",
  err_link_text: "It may have expired. Please start the check again from the app or the kiosk.",
  err_closed_title: "This check has already been done",
  err_closed_text: "Please start a new check from the app or the kiosk.",
  err_unknown_title: "This check was not found",
  err_unknown_text: "It may have expired. Please start the check again.",
  err_network_title: "No connection to the service",
  err_network_text: "Please check the internet connection, then press Try again.",
  err_busy_title: "The service is busy",
  err_busy_text: "Please wait a moment, then press Try again.",
  err_rejected_title: "The recording could not be used",
  err_rejected_text: "Please start the check again.",
  err_interrupted_title: "The check was interrupted",
  err_interrupted_text: "Please keep this page open until the check is finished, and start again.",
  err_generic_title: "Something went wrong",
  err_generic_text: "Please start the check again.",
  // the notice and the separate consent, before the camera opens (docs/compliance.md)
  consentTitle: "Before the face check: your consent",
  consentText: "This check uses your face. Please read how your face information is used, then choose.",
  notice_processor_name: "Who processes it",
  notice_processor_contact: "Contact",
  notice_purpose: "Purpose",
  notice_method: "How",
  notice_retention: "How long it is kept",
  notice_rights: "Your rights",
  notice_alternative: "Without your face",
  noticeVersion: "Notice version {version}",
  consentAgree: "I agree to the face check",
  consentDecline: "I do not agree",
  declinedTitle: "You chose not to use the face check",
  declinedText: "Nothing was recorded by the camera. You can be checked without your face:",
  err_notice_title: "The face check is not available yet",
  err_notice_text: "The service has no published notice, so it cannot ask for your consent. Please ask at the counter.",
  err_consent_title: "Consent is needed first",
  err_consent_text: "The check cannot start without your consent. Please start again.",
  err_withdrawn_title: "You have withdrawn your consent",
  err_withdrawn_text: "Your face information was erased. Please ask at the counter for a check without your face.",
  err_guardian_title: "A guardian's consent is needed",
  err_guardian_text: "For a child under 14, a parent or guardian must consent first, at the counter.",
  reason_consent_declined: "You chose not to use the face check.",
  cause_too_bright: "The last photo of your face was too bright. Turn away from the window or the lamp, or move out of direct sunlight.",
  cause_too_dark: "The last photo of your face was too dark. Move to a brighter place, with the light in front of you, not behind you.",
  cause_blurred: "The last photo of your face was blurred. Hold still, hold the device steady, and wipe the camera lens.",
  cause_turned: "Your face was turned away in the last photo. Look straight into the camera.",
  cause_too_far: "Your face was too small in the last photo. Come closer to the camera.",
  cause_second_face: "There was a second face in the last photo. Only the person checked should be in the picture.",
};

const zhCN = {
  title: "人脸核验",
  intro: "我们将确认是您本人此刻在摄像头前。大约需要 {seconds} 秒。",
  introSteps: "请按提示完成以下动作：",
  tipLight: "请在光线充足的地方进行，避免背对明亮的窗户。",
  tipFace: "请摘下墨镜、口罩或帽子。",
  tipPhone: "请将手机举到与眼睛齐平，距离约一臂远。",
  tipKiosk: "请站在屏幕正前方，看着屏幕。",
  start: "开始",
  tryAgain: "重试",
  startAgain: "重新开始",
  cancel: "取消",
  done: "完成",
  language: "English",
  languageLabel: "Switch to English",
  loading: "正在准备核验…",
  cameraWaiting: "正在打开摄像头。如有提示，请允许使用摄像头。",
  positioning: "请准备",
  capturing: "请按提示操作",
  stepOf: "第 {n} 步，共 {total} 步",
  progressLabel: "核验步骤",
  timeLeft: "剩余 {seconds} 秒",
  checking: "正在核验…",
  checkingText: "请稍候。",
  passTitle: "核验完成",
  passText: "谢谢，您可以继续下一步。",
  failTitle: "未能通过核验",
  failText: "请重试。如果多次失败，请到柜台寻求帮助。",
  kioskWelcome: "欢迎",
  kioskStartText: "请点击“开始”进行人脸核验。",
  kioskWaiting: "请稍候，正在准备核验。",
  kioskReturning: "{seconds} 秒后返回首页。",
  reviewTitle: "请稍候",
  reviewPending: "工作人员正在核对您的照片，请在此稍候。",
  reviewTime: "通常不超过 {minutes} 分钟。",
  reviewTimeOne: "通常不超过 1 分钟。",
  reviewIdentifiedTitle: "核对完成",
  reviewIdentified: "工作人员已确认您的身份，请继续办理。",
  reviewCounterTitle: "请到柜台办理",
  reviewNone: "工作人员未能确认您的身份，请到柜台办理。",
  reviewExpired: "没有工作人员能及时核对您的照片，请到柜台办理。",
  noSessionTitle: "暂无核验任务",
  noSessionText: "请从应用或自助终端打开本页面。",
  videoLabel: "摄像头画面",
  guide_no_face: "请将脸部放在椭圆框内",
  guide_move_closer: "请靠近一些",
  guide_move_back: "请稍微后退",
  guide_center: "请将脸部移到椭圆框中间",
  guide_one_face: "画面中只能有一张脸",
  guide_too_dark: "光线太暗，请到明亮的地方",
  guide_too_bright: "光线太强，请避开强光",
  guide_hold_still: "很好，请保持不动",
  guide_keep_in_oval: "请保持脸部在椭圆框内",
  step_neutral: "请正视摄像头",
  step_blink: "请眨眨眼",
  step_turn_left: "请慢慢向左转头，再转回来",
  step_turn_right: "请慢慢向右转头，再转回来",
  step_open_mouth: "请张大嘴，再闭上",
  step_nod: "请点点头",
  short_blink: "眨眼",
  short_turn_left: "向左转头",
  short_turn_right: "向右转头",
  short_open_mouth: "张嘴",
  short_nod: "点头",
  reason_action_blink: "没有检测到眨眼动作。",
  reason_action_turn_left: "没有检测到向左转头的动作。",
  reason_action_turn_right: "没有检测到向右转头的动作。",
  reason_action_open_mouth: "没有检测到张嘴动作。",
  reason_action_nod: "没有检测到点头动作。",
  reason_motion: "未能检测到真人的动作。不能使用照片或屏幕。",
  reason_multiple_faces: "画面中出现了多张脸。只有被核验的人可以在画面中。",
  reason_face_lost: "您的脸部离开了椭圆框。请始终保持脸部在椭圆框内。",
  reason_identity_changed: "核验过程中画面里的人发生了变化。",
  reason_frame_rate: "摄像头画面太慢。请关闭其他应用后重试。",
  reason_spoof: "画面看起来不像真人。",
  reason_service: "服务未能完成本次核验。",
  err_camera_denied_title: "摄像头权限被拒绝",
  err_camera_denied_text: "请在浏览器设置或地址栏中允许本页面使用摄像头，然后点击“重试”。",
  err_no_camera_title: "未找到摄像头",
  err_no_camera_text: "请连接摄像头，或使用带前置摄像头的手机或平板。",
  err_camera_busy_title: "摄像头正被占用",
  err_camera_busy_text: "请关闭正在使用摄像头的其他应用，然后点击“重试”。",
  err_insecure_title: "此处无法使用摄像头",
  err_insecure_text: "本页面必须通过安全连接（https）打开。",
  err_camera_failed_title: "摄像头未能启动",
  err_camera_failed_text: "请点击“重试”。如果仍不行，请重启设备。",
  err_expired_title: "本次核验已超时",
  err_expired_text: "请重新开始核验。",
  err_link_title: "此链接已无法使用",
  err_link_text: "链接可能已过期。请从应用或自助终端重新开始核验。",
  err_closed_title: "本次核验已经完成",
  err_closed_text: "请从应用或自助终端开始新的核验。",
  err_unknown_title: "未找到本次核验",
  err_unknown_text: "核验可能已过期。请重新开始核验。",
  err_network_title: "无法连接到服务",
  err_network_text: "请检查网络连接，然后点击“重试”。",
  err_busy_title: "服务繁忙",
  err_busy_text: "请稍等片刻，然后点击“重试”。",
  err_rejected_title: "录制内容无法使用",
  err_rejected_text: "请重新开始核验。",
  err_interrupted_title: "核验被中断",
  err_interrupted_text: "核验完成前请不要离开本页面，请重新开始。",
  cause_too_bright: "上一张照片中您的脸太亮了。请背对窗户或灯光，或避开阳光直射。",
  cause_too_dark: "上一张照片中您的脸太暗了。请到更亮的地方，让光线照在您的前面，而不是身后。",
  cause_blurred: "上一张照片中您的脸模糊不清。请保持不动，拿稳设备，并擦拭摄像头镜头。",
  cause_turned: "上一张照片中您的脸没有正对摄像头。请直视摄像头。",
  cause_too_far: "上一张照片中您的脸太小了。请靠近摄像头。",
  cause_second_face: "上一张照片中出现了另一张脸。只有被核验的人可以在画面中。",
  err_generic_title: "出现了问题",
  err_generic_text: "请重新开始核验。",
  consentTitle: "人脸核验前：请您确认是否同意",
  consentText: "本次核验将使用您的人脸信息。请阅读以下说明后选择。",
  notice_processor_name: "处理者",
  notice_processor_contact: "联系方式",
  notice_purpose: "处理目的",
  notice_method: "处理方式",
  notice_retention: "保存期限",
  notice_rights: "您的权利",
  notice_alternative: "不使用人脸的方式",
  noticeVersion: "告知书版本 {version}",
  consentAgree: "我同意进行人脸核验",
  consentDecline: "我不同意",
  declinedTitle: "您选择不使用人脸核验",
  declinedText: "摄像头没有采集任何画面。您可以通过以下不使用人脸的方式办理：",
  err_notice_title: "人脸核验暂不可用",
  err_notice_text: "服务尚未发布告知书，无法征求您的同意。请到窗口咨询。",
  err_consent_title: "需要先征得您的同意",
  err_consent_text: "未经您同意，核验无法开始。请重新开始。",
  err_withdrawn_title: "您已撤回同意",
  err_withdrawn_text: "您的人脸信息已被删除。请到窗口办理不使用人脸的核验。",
  err_guardian_title: "需要监护人同意",
  err_guardian_text: "不满十四周岁的未成年人，须先由父母或其他监护人在窗口表示同意。",
  reason_consent_declined: "您选择了不使用人脸核验。",
};

export const TEXTS = { en, "zh-CN": zhCN };

/** The supported locale for a requested one, else for the browser's languages; English otherwise. */
export function pickLocale(requested, languages = (typeof navigator !== "undefined" ? navigator.languages : []) || []) {
  const wanted = [requested, ...languages].filter(Boolean).map((l) => String(l).toLowerCase());
  for (const lang of wanted) {
    if (lang.startsWith("zh")) return "zh-CN";
    if (lang.startsWith("en")) return "en";
  }
  return "en";
}

/** A translator for ``locale``: ``t("stepOf", {n: 1, total: 2})``. */
export function translator(locale) {
  const table = TEXTS[locale] || en;
  return (key, values = {}) => {
    const text = table[key] ?? en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
  };
}

// Problem codes of the service and the page's own failure codes -> the error text's key, and
// whether pressing "Try again" can help within the same session.
const ERRORS = {
  camera_denied: ["camera_denied", true],
  no_camera: ["no_camera", true],
  camera_busy: ["camera_busy", true],
  insecure_context: ["insecure", false],
  camera_failed: ["camera_failed", true],
  liveness_session_expired: ["expired", false],
  unauthorized: ["link", false],
  forbidden: ["link", false],
  liveness_session_closed: ["closed", false],
  frames_out_of_order: ["rejected", false],
  liveness_session_unknown: ["unknown", false],
  not_found: ["unknown", false],
  network: ["network", true],
  rate_limited: ["busy", true],
  overloaded: ["busy", true],
  not_ready: ["busy", true],
  invalid_request: ["rejected", false],
  image_too_large: ["rejected", false],
  unsupported_image: ["rejected", false],
  internal_error: ["rejected", false],
  interrupted: ["interrupted", false],
  notice_missing: ["notice", false],
  consent_required: ["consent", false],
  consent_declined: ["consent", false],
  notice_version_stale: ["consent", false],
  consent_withdrawn: ["withdrawn", false],
  guardian_consent_required: ["guardian", false],
};

/** ``{titleKey, textKey, retry}`` for an error code (a problem ``code`` or the page's own). */
export function errorText(code) {
  const [name, retry] = ERRORS[code] || ["generic", false];
  return { titleKey: `err_${name}_title`, textKey: `err_${name}_text`, retry };
}

export const ERROR_CODES = Object.keys(ERRORS);

// Liveness reasons (docs/liveness.md) -> the text's key; the first known reason is shown.
const REASONS = {
  no_natural_motion: "reason_motion",
  repeated_frames: "reason_motion",
  passive_spoof_suspected: "reason_spoof",
  multiple_faces: "reason_multiple_faces",
  face_not_tracked: "reason_face_lost",
  face_discontinuity: "reason_face_lost",
  identity_changed: "reason_identity_changed",
  frame_rate_too_low: "reason_frame_rate",
  timestamps_not_monotonic: "reason_service",
  passive_unavailable: "reason_service",
  consent_declined: "reason_consent_declined",
};

export const REASON_CODES = Object.keys(REASONS);

// Why the service refused a photo (a problem's ``cause``, docs/service.md): what the person can change.
export const CAUSE_CODES = ["too_bright", "too_dark", "blurred", "turned", "too_far", "second_face"];

/** The text key for a refusal's ``cause`` (null for none or an unknown one). */
export function causeText(cause) {
  return CAUSE_CODES.includes(cause) ? `cause_${cause}` : null;
}

/** The text keys explaining a failed verdict's ``reasons`` (most telling first, no repeats). */
export function reasonTexts(reasons = []) {
  const keys = [];
  const add = (k) => { if (k && !keys.includes(k)) keys.push(k); };
  // a spoof or another face matters more to the person than a missed action
  for (const r of reasons) if (REASONS[r] && REASONS[r] !== "reason_service") add(REASONS[r]);
  for (const r of reasons) {
    const m = /^action_not_detected:(\w+)$/.exec(r);
    if (m && `reason_action_${m[1]}` in en) add(`reason_action_${m[1]}`);
  }
  for (const r of reasons) if (REASONS[r] === "reason_service") add("reason_service");
  return keys.slice(0, 2);
}
