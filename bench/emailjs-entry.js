// The page-side reference: emailjs-smtp-client 2.0.1 as published (its dist/, with its own
// dependencies, text-encoding included), with only emailjs-tcp-socket swapped for tcp-shim.js.
import SmtpClient from "emailjs-smtp-client";
import TCPSocket from "./tcp-shim.js";

globalThis.EmailjsSmtpClient = SmtpClient;
globalThis.EmailjsTCPSocket = TCPSocket;
